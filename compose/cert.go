package compose

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"
)

// Certificate is the certificate of a request, in exactly one of its
// encodings. The binary ones are base64 (RFC 4648 4; line breaks and
// spaces, as pasted, are ignored).
type Certificate struct {
	PEM    string `json:"pem,omitempty"`    // one or more CERTIFICATE blocks (RFC 7468 5)
	DER    string `json:"der,omitempty"`    // one certificate
	PKCS7  string `json:"pkcs7,omitempty"`  // a degenerate SignedData, "certs-only" (RFC 5751 3.2.2); PEM armour allowed
	PKCS12 string `json:"pkcs12,omitempty"` // a PFX (RFC 7292): holds a private key, so only with downloadlink
}

// maxChain bounds the certificates taken from one request: a leaf and its
// intermediates are a handful, never dozens.
const maxChain = 10

var (
	oidData       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
)

// parsedCert is what a request's certificate turned out to be.
type parsedCert struct {
	kind  string              // "pem", "der", "pkcs7" or "pkcs12": the field it came in
	certs []*x509.Certificate // leaf first as given; empty for pkcs12
	raw   []byte              // the bytes as given (DER, PKCS#7 or PFX), the PEM text for pem
}

// leaf is the certificate whose fields fill the template: the first one,
// as every issuer's PEM bundle and Windows' .p7b export order them.
func (p *parsedCert) leaf() *x509.Certificate {
	if p == nil || len(p.certs) == 0 {
		return nil
	}
	return p.certs[0]
}

// parseCertificate checks the one encoding c carries. Every refusal is a
// *FieldError on the field at fault.
func parseCertificate(c *Certificate) (*parsedCert, error) {
	var set []string
	for _, f := range []struct{ name, v string }{{"pem", c.PEM}, {"der", c.DER}, {"pkcs7", c.PKCS7}, {"pkcs12", c.PKCS12}} {
		if f.v != "" {
			set = append(set, f.name)
		}
	}
	switch len(set) {
	case 0:
		return nil, fieldErr("certificate", "give the certificate as one of pem, der, pkcs7 or pkcs12")
	case 1:
	default:
		return nil, fieldErr("certificate", "give the certificate in one encoding only, not "+strings.Join(set, " and "))
	}
	switch set[0] {
	case "pem":
		return parsePEM(c.PEM)
	case "der":
		der, err := decodeBase64("certificate.der", c.DER)
		if err != nil {
			return nil, err
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fieldErr("certificate.der", "is not an X.509 certificate: "+err.Error())
		}
		return &parsedCert{kind: "der", certs: []*x509.Certificate{cert}, raw: der}, nil
	case "pkcs7":
		s := strings.TrimSpace(c.PKCS7)
		var der []byte
		if strings.HasPrefix(s, "-----BEGIN") {
			// Windows and OpenSSL write .p7b files with PEM armour too.
			b, _ := pem.Decode([]byte(s))
			if b == nil || b.Type != "PKCS7" {
				return nil, fieldErr("certificate.pkcs7", "holds PEM armour that is not one PKCS7 block")
			}
			der = b.Bytes
		} else {
			var err error
			if der, err = decodeBase64("certificate.pkcs7", s); err != nil {
				return nil, err
			}
		}
		certs, err := parsePKCS7(der)
		if err != nil {
			return nil, fieldErr("certificate.pkcs7", err.Error())
		}
		return &parsedCert{kind: "pkcs7", certs: certs, raw: der}, nil
	default:
		der, err := decodeBase64("certificate.pkcs12", c.PKCS12)
		if err != nil {
			return nil, err
		}
		if err := checkPFX(der); err != nil {
			return nil, fieldErr("certificate.pkcs12", err.Error())
		}
		return &parsedCert{kind: "pkcs12", raw: der}, nil
	}
}

// parsePEM takes every CERTIFICATE block of s, in order. Text around the
// blocks (OpenSSL's "subject=" lines) is ignored; a private key anywhere
// refuses the whole, since mailing it would give it away.
func parsePEM(s string) (*parsedCert, error) {
	rest := []byte(s)
	var certs []*x509.Certificate
	var text bytes.Buffer
	for i := 0; ; i++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if strings.Contains(b.Type, "PRIVATE KEY") {
			return nil, fieldErr("certificate.pem", "holds a private key ("+b.Type+"): a private key is never mailed; send only the certificate, or a PKCS#12 file as a download link")
		}
		if b.Type != "CERTIFICATE" {
			return nil, fieldErr("certificate.pem", fmt.Sprintf("block %d is %q, not CERTIFICATE", i+1, b.Type))
		}
		if len(certs) == maxChain {
			return nil, fieldErr("certificate.pem", fmt.Sprintf("holds more than %d certificates", maxChain))
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fieldErr("certificate.pem", fmt.Sprintf("block %d is not an X.509 certificate: %v", i+1, err))
		}
		certs = append(certs, cert)
		// Re-encoded without headers and stray text: what the recipient
		// installs should be exactly the certificates.
		pem.Encode(&text, &pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes})
	}
	if len(certs) == 0 {
		return nil, fieldErr("certificate.pem", "holds no -----BEGIN CERTIFICATE----- block")
	}
	return &parsedCert{kind: "pem", certs: certs, raw: text.Bytes()}, nil
}

// decodeBase64 reads standard base64, padded or not, ignoring the white
// space of a wrapped paste.
func decodeBase64(field, s string) ([]byte, error) {
	s = strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if b, err = base64.RawStdEncoding.DecodeString(s); err != nil {
			return nil, fieldErr(field, "is not base64 (RFC 4648 4)")
		}
	}
	return b, nil
}

// readElements splits the contents of a constructed DER value into its
// elements, at most max of them.
func readElements(b []byte, max int) ([]asn1.RawValue, error) {
	var out []asn1.RawValue
	for len(b) > 0 {
		if len(out) == max {
			return nil, fmt.Errorf("more than %d elements", max)
		}
		var v asn1.RawValue
		rest, err := asn1.Unmarshal(b, &v)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		b = rest
	}
	return out, nil
}

func isUniversal(v asn1.RawValue, tag int) bool {
	return v.Class == asn1.ClassUniversal && v.Tag == tag
}

// parsePKCS7 reads the certificates of a degenerate SignedData (RFC 5652
// 5.1; "certs-only", RFC 5751 3.2.2): ContentInfo { signedData, [0] {
// version, digestAlgorithms, encapContentInfo, [0] IMPLICIT certificates,
// [1] crls OPTIONAL, signerInfos } } with no signers. Only plain
// certificates are taken; a message that is signed is not a certificate
// bundle and is refused.
func parsePKCS7(der []byte) ([]*x509.Certificate, error) {
	var ci struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue // [0] EXPLICIT, read by hand: see marshalContentInfo
	}
	rest, err := asn1.Unmarshal(der, &ci)
	if err != nil {
		return nil, fmt.Errorf("is not a PKCS#7 ContentInfo (DER): %v", err)
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("has %d bytes after the PKCS#7 structure", len(rest))
	}
	if !ci.ContentType.Equal(oidSignedData) {
		return nil, fmt.Errorf("is PKCS#7 content %v, not signedData (%v)", ci.ContentType, oidSignedData)
	}
	if ci.Content.Class != asn1.ClassContextSpecific || ci.Content.Tag != 0 || !ci.Content.IsCompound {
		return nil, fmt.Errorf("has no signedData content")
	}
	var sd asn1.RawValue
	if rest, err := asn1.Unmarshal(ci.Content.Bytes, &sd); err != nil || len(rest) > 0 || !isUniversal(sd, asn1.TagSequence) {
		return nil, fmt.Errorf("signedData is not one SEQUENCE")
	}
	// version, digestAlgorithms, encapContentInfo, certificates, crls,
	// signerInfos: at most six.
	els, err := readElements(sd.Bytes, 6)
	if err != nil {
		return nil, fmt.Errorf("signedData: %v", err)
	}
	if len(els) < 4 || !isUniversal(els[0], asn1.TagInteger) || !isUniversal(els[1], asn1.TagSet) || !isUniversal(els[2], asn1.TagSequence) {
		return nil, fmt.Errorf("signedData is malformed")
	}
	var certsField *asn1.RawValue
	i := 3
	if e := els[i]; e.Class == asn1.ClassContextSpecific && e.Tag == 0 && e.IsCompound {
		certsField = &els[i]
		i++
	}
	if i < len(els) && els[i].Class == asn1.ClassContextSpecific && els[i].Tag == 1 {
		i++ // CRLs: nothing to mail
	}
	if i != len(els)-1 || !isUniversal(els[i], asn1.TagSet) {
		return nil, fmt.Errorf("signedData is malformed (signerInfos)")
	}
	if len(els[i].Bytes) != 0 {
		return nil, fmt.Errorf("is a signed PKCS#7 message, not a certificates-only bundle")
	}
	if certsField == nil {
		return nil, fmt.Errorf("holds no certificates")
	}
	raws, err := readElements(certsField.Bytes, maxChain)
	if err != nil {
		return nil, fmt.Errorf("certificates: %v", err)
	}
	certs := make([]*x509.Certificate, 0, len(raws))
	for n, r := range raws {
		if !isUniversal(r, asn1.TagSequence) {
			return nil, fmt.Errorf("certificate %d is not a plain X.509 certificate", n+1)
		}
		c, err := x509.ParseCertificate(r.FullBytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d is not an X.509 certificate: %v", n+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("holds no certificates")
	}
	return certs, nil
}

// buildPKCS7 makes the degenerate SignedData that carries certs, in their
// order (RFC 5652 5.1 with no signers, RFC 5751 3.2.2).
func buildPKCS7(certs []*x509.Certificate) ([]byte, error) {
	var all []byte
	for _, c := range certs {
		all = append(all, c.Raw...)
	}
	return marshalSignedData(all, nil)
}

// marshalSignedData writes a SignedData ContentInfo: version 1, no digest
// algorithms, content type data without content, the certificates (DER,
// concatenated) and signerInfos' contents (none for certs-only).
func marshalSignedData(certs, signerInfos []byte) ([]byte, error) {
	set := func(b []byte) asn1.RawValue {
		return asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSet, IsCompound: true, Bytes: append([]byte{}, b...)}
	}
	sd := struct {
		Version          int
		DigestAlgorithms asn1.RawValue
		ContentInfo      struct{ ContentType asn1.ObjectIdentifier }
		Certificates     asn1.RawValue
		SignerInfos      asn1.RawValue
	}{
		Version:          1,
		DigestAlgorithms: set(nil),
		Certificates:     asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: certs},
		SignerInfos:      set(signerInfos),
	}
	sd.ContentInfo.ContentType = oidData
	inner, err := asn1.Marshal(sd)
	if err != nil {
		return nil, err
	}
	return marshalContentInfo(oidSignedData, inner)
}

// marshalContentInfo writes ContentInfo { contentType, [0] EXPLICIT
// content } (RFC 5652 3). The [0] is written by hand: encoding/asn1
// writes a RawValue's FullBytes as they are, without the explicit tag.
func marshalContentInfo(oid asn1.ObjectIdentifier, content []byte) ([]byte, error) {
	return asn1.Marshal(struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue
	}{oid, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: content}})
}

// checkPFX checks the outer shape of a PKCS#12 file (RFC 7292 4: PFX {
// version 3, authSafe ContentInfo, macData OPTIONAL }). Its contents are
// encrypted under a password certgate does not have, so that is all.
func checkPFX(der []byte) error {
	var pfx struct {
		Version  int
		AuthSafe struct {
			ContentType asn1.ObjectIdentifier
			Content     asn1.RawValue `asn1:"explicit,optional,tag:0"`
		}
		MacData asn1.RawValue `asn1:"optional"`
	}
	rest, err := asn1.Unmarshal(der, &pfx)
	if err != nil || len(rest) > 0 || pfx.Version != 3 {
		return fmt.Errorf("is not a PKCS#12 (PFX, RFC 7292) file")
	}
	return nil
}

// certVars are the certificate's fields as template variables, dates in
// the language's usual form and in UTC so that every recipient reads the
// same instant.
func certVars(c *x509.Certificate, language string) map[string]string {
	if c == nil {
		return nil
	}
	layout := "02/01/2006 15:04 MST"
	if language == "en" {
		layout = "2 Jan 2006 15:04 MST"
	}
	return map[string]string{
		"common_name": c.Subject.CommonName,
		"issuer_name": c.Issuer.CommonName,
		"serial":      colonHex(c.SerialNumber.Bytes()),
		"not_before":  c.NotBefore.UTC().Format(layout),
		"not_after":   c.NotAfter.UTC().Format(layout),
	}
}

// colonHex writes a serial number as certificate viewers show it
// ("0A:1B:..."), so that a person can compare the two.
func colonHex(b []byte) string {
	if len(b) == 0 {
		return "00"
	}
	h := strings.ToUpper(hex.EncodeToString(b))
	var sb strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			sb.WriteByte(':')
		}
		sb.WriteString(h[i : i+2])
	}
	return sb.String()
}

func encodeStd(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
