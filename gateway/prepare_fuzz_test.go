package gateway

import (
	"bytes"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/gateway/signer"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/mimeedit"
	"github.com/certgate/certgate/quarantine"
	"github.com/certgate/certgate/sim"
	"github.com/certgate/certgate/store"
)

// fuzzPreparer is a preparer with Ed25519 keys (fast enough to sign at
// fuzzing rates; RSA would spend every cycle in the private key) for the
// three From domains of the sample mails, and a way to verify its
// signatures.
func fuzzPreparer(tb testing.TB) (*Preparer, func(domain string) ([]string, error)) {
	tb.Helper()
	var keys []*signer.Key
	txt := map[string][]string{}
	for _, d := range []string{"ca.example", "certs.example", "ac.example"} {
		k, _, err := signer.Generate("ed25519", d, "fuzz")
		if err != nil {
			tb.Fatal(err)
		}
		name, value := k.DNSRecord()
		txt[strings.TrimSuffix(name, ".")] = []string{value}
		keys = append(keys, k)
	}
	lookup := func(domain string) ([]string, error) {
		if v, ok := txt[strings.TrimSuffix(domain, ".")]; ok {
			return v, nil
		}
		return nil, errors.New("no such record")
	}
	return NewPreparer("relay.certgate.example", signer.New(keys), metrics.New()), lookup
}

// FuzzPrepare feeds arbitrary submitted bytes (past the session's line
// ending check) through the whole preparation: long lines, alignment,
// control fields, gated links and signing. A message is either refused
// with one of certgate's own 5xx replies (never an internal error, which
// the client would see as a 451 and retry for days), or every copy comes
// out deliverable: CRLF only, no line over 998 octets, exactly one From in
// the tenant's domains, no X-Certgate-* or Bcc field, Date and Message-ID
// present, and a DKIM signature that verifies over the copy as sent, with
// the per-recipient tracking field in front. A message that needed no
// change keeps its body byte for byte.
func FuzzPrepare(f *testing.F) {
	for _, sm := range sim.SampleMails() {
		m := sm.Data
		f.Add(m, uint8(0))
		f.Add(m, uint8(3))
	}
	f.Add([]byte("From: a@ca.example\r\n"), uint8(0))
	f.Add([]byte("From: a@ca.example\r\nX-Certgate-Hold: yes\r\nBcc: x@y.example\r\n\r\nhttps://descargas.ca.example/x\r\n"), uint8(1))
	f.Add([]byte("From: a@ca.example\r\nContent-Type: text/plain\r\n\r\n"+strings.Repeat("y", 1200)+"\r\n"), uint8(2))

	p, lookup := fuzzPreparer(f)
	domains := []string{"ca.example", "certs.example", "ac.example"}
	plain := &Tenant{Name: "plain", FromDomains: domains, DefaultClass: config.ClassBulk}
	gated := &Tenant{Name: "gated", FromDomains: domains, DefaultClass: config.ClassBulk, Links: quarantine.NewLinkPolicy(config.Links{
		Gate:   []string{"https://descargas.ca.example/", "https://www.certs.example/download/", "https://emissao.ac.example/"},
		Enable: config.LinksOnDelivery, TTL: config.Duration(time.Hour), MaxUses: 3}, "https://gate.ca.example")}
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)

	f.Fuzz(func(t *testing.T, data []byte, mode uint8) {
		env := &Envelope{Tenant: plain, AuthUser: "issuer", ClientIP: netip.MustParseAddr("192.0.2.10"), Helo: "issuer.example",
			TLS: mode&4 != 0, From: "bounces@ca.example", Rcpts: []string{"juan@empresa.example"}}
		if mode&1 != 0 {
			env.Tenant = gated
		}
		if mode&2 != 0 {
			env.Rcpts = append(env.Rcpts, "maria@loja.example")
		}
		out, err := p.Prepare(env, "06h0fuzz000000000000000001", data, now)
		if checkLineEndings(data) != nil {
			return // the session refuses it before preparation; it must only not panic
		}
		if err != nil {
			var r *reply
			if !errors.As(err, &r) || r.code < 500 {
				t.Fatalf("refused with %v (%T), not a 5xx reply of certgate's: the client would retry", err, err)
			}
			return
		}
		if len(out.Rcpts) != len(env.Rcpts) || len(out.Contents) == 0 {
			t.Fatalf("%d recipients and %d contents for %d recipients", len(out.Rcpts), len(out.Contents), len(env.Rcpts))
		}
		if _, _, d, err := parseAddress(out.Message.HeaderFrom); err != nil || !env.Tenant.Owns(d) {
			t.Fatalf("header From %q is not in the tenant's domains (%v)", out.Message.HeaderFrom, err)
		}
		if out.Message.Size != int64(len(out.Contents[0])) {
			t.Fatalf("size %d, first content %d", out.Message.Size, len(out.Contents[0]))
		}
		for _, rc := range out.Rcpts {
			if rc.Content < 0 || rc.Content >= len(out.Contents) {
				t.Fatalf("recipient %s has content %d of %d", rc.Address, rc.Content, len(out.Contents))
			}
			if !bytes.HasPrefix(rc.Prefix, []byte(store.TrackingHeader+": ")) || sim.WireProblem(rc.Prefix) != "" || !bytes.HasSuffix(rc.Prefix, []byte("\r\n")) {
				t.Fatalf("tracking prefix %q", rc.Prefix)
			}
			copyMsg := append(append([]byte(nil), rc.Prefix...), out.Contents[rc.Content]...)
			checkPreparedCopy(t, copyMsg, lookup)
		}
		// A message that needed no edit keeps its body byte for byte.
		if _, changed, err := mimeedit.FixLongLines(data); err == nil && !changed && len(out.Rcpts[0].Links) == 0 {
			_, body, err := mimeedit.SplitHeader(data)
			if err == nil && len(body) > 0 && !bytes.HasSuffix(out.Contents[0], body) {
				t.Fatal("the body of a message that needed no change was changed")
			}
		}
	})
}

// checkPreparedCopy checks one copy as it goes on the wire.
func checkPreparedCopy(t *testing.T, msg []byte, lookup func(string) ([]string, error)) {
	t.Helper()
	if p := sim.WireProblem(msg); p != "" {
		t.Fatalf("prepared copy: %s", p)
	}
	hb, _, err := mimeedit.SplitHeader(msg)
	if err != nil {
		t.Fatalf("prepared copy's header: %v", err)
	}
	h, err := mimeedit.ParseHeader(hb)
	if err != nil {
		t.Fatalf("prepared copy's header: %v", err)
	}
	count := func(pred func(string) bool) int {
		n := 0
		for _, fl := range h.Fields() {
			if pred(strings.ToLower(fl.Name)) {
				n++
			}
		}
		return n
	}
	if n := count(func(n string) bool { return strings.HasPrefix(n, "x-certgate-") && n != "x-certgate-tracking-id" }); n > 0 {
		t.Fatalf("%d X-Certgate-* control fields left", n)
	}
	if h.Count(store.TrackingHeader) != 1 || h.Count("Bcc") != 0 || h.Count("From") != 1 || h.Count("Date") == 0 ||
		h.Count("Message-ID") == 0 || h.Count("DKIM-Signature") == 0 || h.Count("Received") == 0 {
		t.Fatalf("header fields: tracking %d, Bcc %d, From %d, Date %d, Message-ID %d, DKIM-Signature %d, Received %d",
			h.Count(store.TrackingHeader), h.Count("Bcc"), h.Count("From"), h.Count("Date"), h.Count("Message-ID"),
			h.Count("DKIM-Signature"), h.Count("Received"))
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: lookup})
	if err != nil || len(vs) == 0 {
		t.Fatalf("verifying: %d signatures, %v", len(vs), err)
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Fatalf("signature of %s does not verify: %v\n%q", v.Domain, v.Err, msg)
		}
	}
}
