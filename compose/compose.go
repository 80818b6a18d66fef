// Package compose builds new mail from an API request: it checks the
// request (addresses, the certificate, the download link), fills a
// tenant's template in the recipient's language, and writes the MIME with
// go-message. It signs, spools and sends nothing: its Message goes the
// same way as a submission over SMTP (preparation, DKIM, the spool).
package compose

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"

	"github.com/certgate/certgate/internal/mailaddr"
)

// Message is what Compose makes: the RFC 5322 message and its recipients.
type Message struct {
	Data       []byte // CRLF line endings, ready for the gateway's preparation (DKIM signing happens later, not here)
	Recipients []string
	Subject    string
	Format     string // the collect format used ("" for mail without a certificate)
	Class      string // as requested ("" when the tenant's default applies)
	Language   string // the template's language used
	Template   string // the template used
}

// Options are what Compose needs to know of the tenant and the moment.
type Options struct {
	Tenant       string
	DisplayName  string // the issuer's name for the From display name and the text
	SupportEmail string
	SupportURL   string
	Now          time.Time
	MessageID    string   // e.g. "id@relay.ca.example", decided by the caller; Compose adds the <>
	GatePrefixes []string // the tenant's links.gate prefixes: with a non-empty list, a download_url outside them is refused (*FieldError on "download_url")
	Language     string   // the tenant's language when the request names none; "" = es
}

// maxVisibleRecipients is how many recipients the To field names. One
// call is one message, as the CA's "email certificate" call sends it: a
// customer's few people see each other on To. Past that, a call is a
// wave to unrelated people, who get "undisclosed-recipients:;" (RFC 5322
// 3.4 group syntax, A.1.3) rather than everyone's address.
const maxVisibleRecipients = 10

// Compose builds the message for tenant (display name and support lines
// come from opts) with Date now and Message-ID msgID (without <>). A bad
// request is a *FieldError; any other error is certgate's.
func (t *Templates) Compose(req *Request, opts Options) (*Message, error) {
	if err := req.Check(); err != nil {
		return nil, err
	}
	if !validMsgID(opts.MessageID) {
		return nil, fmt.Errorf("compose: message ID %q is not id-left@id-right (RFC 5322 3.6.4)", opts.MessageID)
	}
	if req.DownloadURL != "" && len(opts.GatePrefixes) > 0 && !underPrefix(req.DownloadURL, opts.GatePrefixes) {
		return nil, fieldErr("download_url", "is not under this sender's download prefixes ("+strings.Join(opts.GatePrefixes, ", ")+"), so its link could not be gated")
	}
	cert, err := req.parsed()
	if err != nil {
		return nil, err
	}
	name := req.Template
	if name == "" {
		name = "certificate"
	}
	fallback := opts.Language
	if fallback == "" {
		fallback = Languages[0]
	}
	p, language, err := t.find(opts.Tenant, name, req.Language, fallback)
	if err != nil {
		return nil, err
	}
	v := &view{
		Lang: language, Issuer: opts.DisplayName, SupportEmail: opts.SupportEmail, SupportURL: opts.SupportURL,
		Format: req.CertificateCollectFormat, Message: strings.TrimSpace(req.CustomMessage), URL: req.DownloadURL,
		V: maps.Clone(req.Variables),
	}
	if v.V == nil {
		v.V = map[string]string{}
	}
	if leaf := cert.leaf(); leaf != nil {
		for k, val := range certVars(leaf, language) {
			if given, ok := v.V[k]; ok && !strings.EqualFold(strings.TrimSpace(given), val) {
				return nil, fieldErr("variables."+k, fmt.Sprintf("is %s, but the certificate says %s", quoteShort(given), quoteShort(val)))
			}
			v.V[k] = val
		}
	}
	var att *attachment
	switch req.CertificateCollectFormat {
	case FormatAttachment:
		if att, err = newAttachment(cert); err != nil {
			return nil, err
		}
		v.Filename = att.filename
	case FormatPlaintext:
		v.PEM = strings.TrimSpace(string(pemOf(cert)))
	}
	subject, text, html, err := p.render(v)
	if err != nil {
		return nil, err
	}
	data, err := writeMessage(req, opts, subject, text, html, att)
	if err != nil {
		return nil, err
	}
	return &Message{
		Data: data, Recipients: append([]string(nil), req.Emails...), Subject: subject,
		Format: req.CertificateCollectFormat, Class: req.Class, Language: language, Template: name,
	}, nil
}

// attachment is the certificate as a file.
type attachment struct {
	filename, contentType string
	params                map[string]string
	data                  []byte
}

// newAttachment picks the file for a certificate, keeping the bytes the
// issuer gave wherever it can:
//   - one DER certificate: NAME.cer, application/pkix-cert, the registered
//     type for one DER certificate (RFC 2585 4.1);
//   - one PEM certificate: NAME.crt, application/x-pem-file: the text as
//     given (less any text around the block); no type is registered for
//     the PEM form, and every system opens a PEM .crt in its certificate
//     viewer. application/x-x509-user-cert is not used: it asks a browser
//     to install a certificate for a key it holds, which is not the case;
//   - a chain (several PEM certificates) or any PKCS#7: NAME.p7b,
//     application/pkcs7-mime; smime-type=certs-only (RFC 5751 3.2.2), the
//     degenerate SignedData as given or, for PEM, built in the order given
//     so that the intermediates travel with the leaf. RFC 5751 suggests
//     .p7c; .p7b is what Windows, the issuers' portals and their
//     customers' instructions use.
//
// A PKCS#12 never gets here (Check refuses it).
func newAttachment(p *parsedCert) (*attachment, error) {
	if p == nil || len(p.certs) == 0 {
		return nil, errors.New("compose: attachment without a certificate")
	}
	base := fileBase(p.leaf().Subject.CommonName)
	switch {
	case p.kind == "der":
		return &attachment{filename: base + ".cer", contentType: "application/pkix-cert", data: p.raw}, nil
	case p.kind == "pem" && len(p.certs) == 1:
		return &attachment{filename: base + ".crt", contentType: "application/x-pem-file", data: p.raw}, nil
	}
	data := p.raw
	if p.kind == "pem" {
		var err error
		if data, err = buildPKCS7(p.certs); err != nil {
			return nil, fmt.Errorf("compose: building the PKCS#7 chain: %w", err)
		}
	}
	return &attachment{
		filename: base + ".p7b", contentType: "application/pkcs7-mime",
		params: map[string]string{"smime-type": "certs-only"}, data: data,
	}, nil
}

// pemOf is the certificates as PEM text: as given for pem, encoded for the
// others.
func pemOf(p *parsedCert) []byte {
	if p == nil {
		return nil
	}
	if p.kind == "pem" {
		return p.raw
	}
	var b bytes.Buffer
	for _, c := range p.certs {
		fmt.Fprintf(&b, "-----BEGIN CERTIFICATE-----\n")
		s := encodeStd(c.Raw)
		for len(s) > 64 { // RFC 7468 2: lines of 64 characters
			b.WriteString(s[:64] + "\n")
			s = s[64:]
		}
		b.WriteString(s + "\n-----END CERTIFICATE-----\n")
	}
	return b.Bytes()
}

// fileBase makes a file name from a subject CN: "*.example.com" becomes
// "wildcard.example.com"; anything but ASCII letters, digits, '.', '-'
// and '_' becomes '_', so that no mail client or file system stumbles.
func fileBase(cn string) string {
	cn = strings.TrimSpace(cn)
	if rest, ok := strings.CutPrefix(cn, "*."); ok {
		cn = "wildcard." + rest
	}
	var b strings.Builder
	for _, r := range cn {
		if b.Len() == 64 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	s := strings.Trim(b.String(), "._")
	if s == "" {
		return "certificate"
	}
	return s
}

// writeMessage writes the MIME with go-message: multipart/alternative
// (text, then HTML, the richer last as RFC 2046 5.1.4 asks) and, with an
// attachment, that inside multipart/mixed.
func writeMessage(req *Request, opts Options, subject, text, html string, att *attachment) ([]byte, error) {
	var h mail.Header
	// go-message writes the fields last to first.
	if req.Class != "" {
		h.Set("X-Certgate-Class", req.Class) // read, then removed, by the gateway
	}
	h.Set("MIME-Version", "1.0")
	h.SetMessageID(opts.MessageID)
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	h.SetDate(now)
	h.SetSubject(subject) // Q-encoded when not ASCII (RFC 2047), by mime.QEncoding
	if len(req.Emails) > maxVisibleRecipients {
		h.Set("To", "undisclosed-recipients:;")
	} else {
		// Bare addr-specs: Check left each a dot-atom at an LDH domain,
		// which needs no quoting (RFC 5322 3.4.1).
		h.Set("To", strings.Join(req.Emails, ", "))
	}
	h.Set("From", formatFrom(opts.DisplayName, req.From))

	var buf bytes.Buffer
	textHeader := func() mail.InlineHeader {
		var th mail.InlineHeader
		th.SetContentType("text/plain", map[string]string{"charset": "utf-8"})
		return th
	}
	htmlHeader := func() mail.InlineHeader {
		var hh mail.InlineHeader
		hh.SetContentType("text/html", map[string]string{"charset": "utf-8"})
		return hh
	}
	writeAlternatives := func(iw *mail.InlineWriter) error {
		for _, part := range []struct {
			h    mail.InlineHeader
			body string
		}{{textHeader(), text}, {htmlHeader(), html}} {
			w, err := iw.CreatePart(part.h)
			if err != nil {
				return err
			}
			// quoted-printable (go-message's default for text) writes
			// CRLF for every line break and keeps lines within 76.
			if _, err := w.Write([]byte(part.body)); err != nil {
				return err
			}
			if err := w.Close(); err != nil {
				return err
			}
		}
		return iw.Close()
	}
	if att == nil {
		iw, err := mail.CreateInlineWriter(&buf, h)
		if err != nil {
			return nil, err
		}
		if err := writeAlternatives(iw); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	mw, err := mail.CreateWriter(&buf, h)
	if err != nil {
		return nil, err
	}
	iw, err := mw.CreateInline()
	if err != nil {
		return nil, err
	}
	if err := writeAlternatives(iw); err != nil {
		return nil, err
	}
	var ah mail.AttachmentHeader
	params := map[string]string{"name": att.filename} // for clients that read only Content-Type
	maps.Copy(params, att.params)
	ah.SetContentType(att.contentType, params)
	ah.SetFilename(att.filename)
	aw, err := mw.CreateAttachment(ah) // base64 (RFC 2045 6.8)
	if err != nil {
		return nil, err
	}
	if _, err := aw.Write(att.data); err != nil {
		return nil, err
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// formatFrom writes From with the issuer's name as its display name,
// Q-encoded when not ASCII (RFC 2047 5(3)), quoted when it holds specials.
func formatFrom(name, addr string) string {
	name = strings.Join(strings.Fields(name), " ") // one line, whatever the configuration says
	if name == "" {
		return addr
	}
	a := mail.Address{Name: name, Address: addr}
	return a.String()
}

// validMsgID accepts a message ID's inside: a dot-atom-text "@" a domain
// name (RFC 5322 3.6.4, without the obsolete forms).
func validMsgID(id string) bool {
	left, right, ok := strings.Cut(id, "@")
	return ok && mailaddr.DotAtom(left) && mailaddr.Domain(strings.ToLower(right)) && len(id) <= 250
}
