package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/gateway/signer"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/mimeedit"
	"github.com/certgate/certgate/quarantine"
	"github.com/certgate/certgate/store"
)

// ClassHeader lets the issuer mark a message bulk or transactional. Like
// every X-Certgate-* field it is removed before signing.
const ClassHeader = "X-Certgate-Class"

// HoldHeader "yes" keeps a message in certgate's quarantine until released.
const HoldHeader = "X-Certgate-Hold"

// Preparer turns an accepted submission into signed per-recipient copies.
type Preparer struct {
	hostname string
	signer   atomic.Pointer[signer.Signer] // swapped whole on reload
	seeds    atomic.Pointer[Seeds]         // likewise; nil: none
	metrics  *metrics.Metrics
}

// NewPreparer builds a preparer that signs with the given signer.
func NewPreparer(hostname string, s *signer.Signer, m *metrics.Metrics) *Preparer {
	p := &Preparer{hostname: hostname, metrics: m}
	p.signer.Store(s)
	return p
}

// SetSigner replaces the signing keys (on reload); messages being prepared
// finish with the keys they started with.
func (p *Preparer) SetSigner(s *signer.Signer) { p.signer.Store(s) }

// SetSeeds replaces the seed mailboxes (on start and reload).
func (p *Preparer) SetSeeds(s *Seeds) { p.seeds.Store(s) }

// Prepared is a message ready to be made durable.
type Prepared struct {
	Message  store.Message
	Contents [][]byte // trace, signatures, header, body: one shared, or one per copy with gated links
	Rcpts    []store.NewRecipient
}

var errMalformed = newReply(550, smtp.EnhancedCode{5, 6, 0}, "syntax", "Malformed message header or MIME structure")

func alignmentError(format string, a ...any) error {
	return newReply(550, smtp.EnhancedCode{5, 7, 1}, "alignment", fmt.Sprintf(format, a...))
}

// Prepare checks a submission's header against its tenant, normalizes it
// and signs it, once for every recipient or, with gated links, once per
// copy. What a relay downstream would rewrite (lines over 998 octets) is
// re-encoded first, so the signature survives the trip.
func (p *Preparer) Prepare(env *Envelope, id string, data []byte, now time.Time) (*Prepared, error) {
	h, body, err := parseSubmission(data)
	if err != nil {
		return nil, err
	}
	sg := p.signer.Load()
	from, keys, err := aligned(h, env.Tenant, sg)
	if err != nil {
		return nil, err
	}
	class, state, err := controls(h, env)
	if err != nil {
		return nil, err
	}
	msgID := p.normalize(h, id, now)
	msg := joinHeader(h.Bytes(), body)
	out := &Prepared{
		Message: store.Message{ID: id, Tenant: env.Tenant.Name, MailFrom: env.From, HeaderFrom: from,
			MessageID: msgID, Subject: decodeSubject(h.Get("Subject")), Class: string(class),
			ClientAddr: env.ClientIP.String(), AuthUser: env.AuthUser, ReceivedAt: now},
	}
	if env.Via == ViaHTTP {
		out.Message.Submitter, out.Message.Note = env.AuthUser, strings.TrimSuffix("via HTTP, "+env.Note, ", ")
	}
	received := p.received(env, id, now)
	seal := func(m []byte) ([]byte, error) {
		sig, err := p.sign(sg, m, keys)
		if err != nil {
			return nil, err
		}
		content := make([]byte, 0, len(received)+len(sig)+len(m))
		return append(append(append(content, received...), sig...), m...), nil
	}
	if err := p.customerCopies(out, env, msg, state, now, seal); err != nil {
		return nil, err
	}
	// A placement test goes to every seed; a tenant's bulk mail, now and
	// then (tenants[].seeding).
	if seeds := p.seeds.Load(); seeds.Len() > 0 && env.PlacementTest {
		// A test is sent now, whatever holds the tenant's mail: it is
		// certgate's own, and its caller waits for the result.
		if err := p.addSeedCopies(out, env, h, body, store.StateQueued, now, seal); err != nil {
			return nil, err
		}
	} else if seeds.Len() > 0 && class == config.ClassBulk && env.Tenant.seeding.due(now) {
		// Continuous seeding is best effort: the customer's message never
		// waits or fails for it, and the next bulk message is seeded instead.
		contents, rcpts := len(out.Contents), len(out.Rcpts)
		if err := p.addSeedCopies(out, env, h, body, state, now, seal); err != nil {
			out.Contents, out.Rcpts = out.Contents[:contents], out.Rcpts[:rcpts]
			env.Tenant.seeding.retry()
		}
	}
	if len(out.Rcpts) == 0 {
		return nil, errNoSeeds
	}
	if out.Message.Size == 0 {
		out.Message.Size = int64(len(out.Contents[0]))
	}
	return out, nil
}

var errNoSeeds = newReply(554, smtp.EnhancedCode{5, 5, 1}, "no_seeds", "A placement test needs seed mailboxes (seeds.mailboxes)")

// customerCopies makes the envelope recipients' copies: with gated links,
// one content each; otherwise one shared content. A recipient that is a
// seed address is tracked as a seed copy.
func (p *Preparer) customerCopies(out *Prepared, env *Envelope, msg []byte, state store.State, now time.Time,
	seal func([]byte) ([]byte, error)) error {
	if len(env.Rcpts) == 0 {
		return nil
	}
	defer func() {
		seeds := p.seeds.Load()
		for i := range out.Rcpts {
			rc := &out.Rcpts[i]
			if sm, ok := seeds.at(rc.Address); ok {
				rc.Seed, rc.SeedProvider = sm.Name, sm.Provider
				inert(rc.Links)
			}
		}
	}()
	// Gated links give every copy its own tokens, so its own body and
	// signature; mail without them shares one of each.
	if lp := env.Tenant.Links; lp != nil {
		contents, rcpts, err := gatedCopies(lp, msg, env.Rcpts, state, now, seal, env.reserve)
		if err != nil {
			return err
		}
		if contents != nil {
			out.Contents, out.Rcpts, out.Message.Size = contents, rcpts, int64(len(contents[0]))
			return nil
		}
	}
	content, err := seal(msg)
	if err != nil {
		return err
	}
	out.Contents, out.Message.Size = [][]byte{content}, int64(len(content))
	for _, rcpt := range env.Rcpts {
		out.Rcpts = append(out.Rcpts, store.NewCopy(rcpt, state, now))
	}
	return nil
}

// parseSubmission re-encodes long lines and splits the header from the
// body; body is nil when the message is all header.
func parseSubmission(data []byte) (*mimeedit.Header, []byte, error) {
	fixed, _, err := mimeedit.FixLongLines(data)
	if err != nil {
		return nil, nil, mimeError(err)
	}
	hb, body, err := mimeedit.SplitHeader(fixed)
	if err != nil {
		return nil, nil, mimeError(err)
	}
	h, err := mimeedit.ParseHeader(hb)
	if err != nil {
		return nil, nil, mimeError(err)
	}
	return h, body, nil
}

// aligned checks that the message has one From address, in the tenant's
// domains, with a DKIM key aligned with it: DMARC (RFC 7489 3.1.1, 6.6.1)
// is evaluated on the one From domain.
func aligned(h *mimeedit.Header, t *Tenant, sg *signer.Signer) (from string, keys []*signer.Key, err error) {
	froms := h.Values("From")
	if len(froms) != 1 {
		return "", nil, alignmentError("The message must have exactly one From header (it has %d)", len(froms))
	}
	list, err := addressParser.ParseList(froms[0])
	if err != nil || len(list) != 1 {
		return "", nil, alignmentError("The From header must hold exactly one valid address")
	}
	from = list[0].Address
	_, _, domain, err := parseAddress(from)
	if err != nil {
		return "", nil, alignmentError("The From header address %q is not a plain address", from)
	}
	if !t.Owns(domain) {
		return "", nil, alignmentError("From domain %s is not one of the domains of tenant %s", domain, t.Name)
	}
	if keys = sg.KeysFor(domain, t.Owns); len(keys) == 0 {
		return "", nil, alignmentError("No DKIM key aligned with From domain %s: the mail would fail DMARC", domain)
	}
	return from, keys, nil
}

// controls reads the issuer's X-Certgate-Class and X-Certgate-Hold,
// falling back to the tenant's defaults.
func controls(h *mimeedit.Header, env *Envelope) (config.Class, store.State, error) {
	t := env.Tenant
	class := t.DefaultClass
	if env.Class != "" {
		// The send API's own fields; its composed mail carries no
		// control header, and one smuggled in is removed unread.
		class = env.Class
	} else if v := h.Get(ClassHeader); v != "" {
		c, ok := config.ParseClass(v)
		if !ok {
			return "", "", newReply(550, smtp.EnhancedCode{5, 6, 0}, "syntax", ClassHeader+" must be bulk or transactional")
		}
		class = c
	}
	if !t.mayUse(class) {
		return "", "", newReply(550, smtp.EnhancedCode{5, 7, 1}, "class",
			fmt.Sprintf("Tenant %s may not send %s mail (tenants[].classes)", t.Name, class))
	}
	hold := t.Hold || env.Hold
	v := strings.ToLower(h.Get(HoldHeader))
	if env.Class != "" {
		v = ""
	}
	switch v {
	case "":
	case "yes", "true", "1":
		hold = true
	case "no", "false", "0":
	default:
		return "", "", newReply(550, smtp.EnhancedCode{5, 6, 0}, "syntax", HoldHeader+" must be yes or no")
	}
	if hold {
		return class, store.StateHeld, nil
	}
	return class, store.StateQueued, nil
}

// normalize removes what must not leave and adds what a submission may
// lack; it returns the Message-ID, without angle brackets.
func (p *Preparer) normalize(h *mimeedit.Header, id string, now time.Time) string {
	// certgate's own control fields never leave, and nobody may forge the
	// tracking header. Bcc must not reach the recipients (RFC 5322 3.6.3).
	h.DelFunc(func(name string) bool {
		return strings.HasPrefix(strings.ToLower(name), "x-certgate-") || strings.EqualFold(name, "Bcc")
	})
	// RFC 6409 8.2, 8.3: a submission server may add Date and Message-ID.
	if h.Count("Date") == 0 {
		h.Add("Date", now.Format(time.RFC1123Z))
	}
	msgID := strings.Trim(h.Get("Message-ID"), "<> \t")
	if msgID == "" {
		msgID = id + "@" + p.hostname
		h.Add("Message-ID", "<"+msgID+">")
	}
	return msgID
}

// joinHeader puts the message back together. A message that is all header
// and no empty line is legal (RFC 5322 3.5, the body is optional), but it
// needs the empty line to end its header.
func joinHeader(hdr, body []byte) []byte {
	if body == nil {
		if !bytes.HasSuffix(hdr, []byte("\r\n")) {
			hdr = append(hdr, "\r\n"...)
		}
		hdr = append(hdr, "\r\n"...)
	}
	return append(hdr, body...)
}

// maxGatedExpansion bounds what one submission may grow to when every
// recipient needs a copy of its own: all copies are held and spooled in one
// transaction, so 500 recipients of a 25 MB message would be 12 GB.
const maxGatedExpansion = 128 << 20

// gatedCopies gates the links of every recipient's copy and signs each;
// nil contents when the message has no gated link.
func gatedCopies(lp *quarantine.LinkPolicy, msg []byte, rcpts []string, state store.State, now time.Time,
	seal func([]byte) ([]byte, error), reserve func(int64) error) (contents [][]byte, out []store.NewRecipient, err error) {
	for i, rcpt := range rcpts {
		copyMsg, links, err := lp.Gate(msg, now)
		if err != nil {
			return nil, nil, mimeError(err)
		}
		if len(links) == 0 {
			return nil, nil, nil // the same message for everyone: nothing gated
		}
		if i == 0 && len(copyMsg)*len(rcpts) > maxGatedExpansion {
			return nil, nil, newReply(552, smtp.EnhancedCode{5, 3, 4}, "size", fmt.Sprintf(
				"With gated links every recipient gets a copy of its own: %d copies of %d KB exceed %d MB; send to fewer recipients at once",
				len(rcpts), len(copyMsg)>>10, maxGatedExpansion>>20))
		}
		if i == 0 {
			if err := reserve(int64(len(copyMsg) * len(rcpts))); err != nil {
				return nil, nil, err
			}
		}
		content, err := seal(copyMsg)
		if err != nil {
			return nil, nil, err
		}
		nr := store.NewCopy(rcpt, state, now)
		nr.Content, nr.Links = i, links
		contents = append(contents, content)
		out = append(out, nr)
	}
	return contents, out, nil
}

// SealDSN signs a DSN certgate generated when a key aligns with the
// reporting host name (delivery.Sealer); otherwise it stays unsigned.
func (p *Preparer) SealDSN(dsn []byte) ([]byte, error) {
	sg := p.signer.Load()
	keys := sg.KeysFor(p.hostname, nil)
	if len(keys) == 0 {
		return dsn, nil
	}
	sig, err := p.sign(sg, dsn, keys)
	if err != nil {
		return nil, err
	}
	return append(sig, dsn...), nil
}

func (p *Preparer) sign(sg *signer.Signer, msg []byte, keys []*signer.Key) ([]byte, error) {
	start := time.Now()
	sig, err := sg.Sign(msg, keys)
	if err != nil {
		return nil, fmt.Errorf("dkim signing: %w", err)
	}
	algs := make([]string, len(keys))
	for i, k := range keys {
		algs[i] = k.Algorithm
	}
	p.metrics.DKIMSignDuration.WithLabelValues(strings.Join(algs, "+")).Observe(time.Since(start).Seconds())
	return sig, nil
}

// received is the trace field of RFC 5321 4.4, with the protocol names of
// RFC 3848 (ESMTPA, ESMTPS, ESMTPSA). A message from the send API came in
// by HTTP, with no HELO: its From-domain clause is the client's address
// alone, and its protocol "HTTP" (over TLS, "HTTPS"), an Attdl-Protocol
// atom of RFC 5321 4.4.
func (p *Preparer) received(env *Envelope, id string, now time.Time) string {
	if env.Via == ViaHTTP {
		proto := "HTTP"
		if env.TLS {
			proto += "S"
		}
		return fmt.Sprintf("Received: from [%s]\r\n\tby %s (certgate) with %s id %s;\r\n\t%s\r\n",
			env.ClientIP, p.hostname, proto, id, now.Format(time.RFC1123Z))
	}
	proto := "ESMTP"
	if env.TLS {
		proto += "S"
	}
	if env.AuthUser != "" {
		proto += "A"
	}
	helo := sanitizeHelo(env.Helo)
	return fmt.Sprintf("Received: from %s ([%s])\r\n\tby %s (certgate) with %s id %s;\r\n\t%s\r\n",
		helo, env.ClientIP, p.hostname, proto, id, now.Format(time.RFC1123Z))
}

func sanitizeHelo(s string) string {
	if len(s) > 255 {
		s = s[:255]
	}
	b := []byte(s)
	for i, c := range b {
		if c <= ' ' || c >= 127 || c == '(' || c == ')' || c == ';' {
			b[i] = '?'
		}
	}
	if len(b) == 0 {
		return "unknown"
	}
	return string(b)
}

func mimeError(err error) error {
	switch {
	case errors.Is(err, mimeedit.ErrLongHeaderLine):
		return errLongHeader
	case errors.Is(err, mimeedit.ErrNotCRLF):
		return errSmuggling
	}
	return errMalformed
}

// addressParser decodes RFC 2047 display names in any charset well enough to
// find the address: the address itself is always ASCII here.
var addressParser = mail.AddressParser{WordDecoder: &mime.WordDecoder{
	CharsetReader: func(_ string, r io.Reader) (io.Reader, error) { return r, nil },
}}

func decodeSubject(s string) string {
	d, err := addressParser.WordDecoder.DecodeHeader(s)
	if err != nil {
		return s
	}
	return d
}
