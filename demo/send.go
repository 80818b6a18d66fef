package demo

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/emersion/go-message/mail"

	"github.com/certgate/certgate/sim"
)

// sendRecipients are where the portal's HTTP send goes: one Gmail and
// one Outlook.com customer.
var sendRecipients = []string{"ana.gomez@gmail.com", "it.contoso@outlook.com"}

// httpSend sends a certificate as an issuer's portal does that speaks no
// SMTP: one JSON call to POST /api/v1/send, with the certificate as an
// attachment, a custom message and an Idempotency-Key. The call is sent
// twice, as a portal retries after a timeout: the second answer is the
// first one again, and each customer gets one copy.
func httpSend(ctx context.Context, out printer, httpBase, token string, google, microsoft *sim.Provider) error {
	out("\nHTTP send (a portal without SMTP: POST /api/v1/send, scope send)")
	certPEM, err := demoCertificate()
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]any{
		"from":                       "certificados@ca.example",
		"emails":                     strings.Join(sendRecipients, "; "), // pasted, as people do
		"certificate_collect_format": "attachment",
		"certificate":                map[string]string{"pem": certPEM},
		"custom_message":             "Su certificado para el portal de facturación.",
		"variables":                  map[string]string{"order": "A1-2026-00042"},
		"class":                      "transactional",
	})
	before := len(google.Messages()) + len(microsoft.Messages())
	var first, again struct {
		ID         string                     `json:"id"`
		Recipients []struct{ Address string } `json:"recipients"`
	}
	replayed := ""
	for i, into := range []any{&first, &again} {
		started := time.Now()
		status, hdr, err := postJSON(ctx, httpBase+"/api/v1/send", token, "demo-A1-2026-00042", body, into)
		if err != nil {
			return err
		}
		if status != http.StatusAccepted {
			return fmt.Errorf("POST /api/v1/send answered %d", status)
		}
		if i == 0 {
			out("  POST /api/v1/send -> 202 in %s: message %s for %d recipients (durable before the answer, as a 250)",
				time.Since(started).Round(time.Millisecond), first.ID, len(first.Recipients))
		} else {
			replayed = hdr.Get("Idempotent-Replayed")
		}
	}
	if again.ID != first.ID || replayed != "true" {
		return fmt.Errorf("the retry with the same Idempotency-Key answered %s (replayed %q), not %s", again.ID, replayed, first.ID)
	}
	out("  the same call again (same Idempotency-Key) -> 202, the first answer replayed: %s", again.ID)
	got, err := waitCopies(ctx, before+len(sendRecipients), google, microsoft)
	if err != nil {
		return err
	}
	for _, m := range got {
		file, dkimOK := attachmentName(m.Data), len(m.DKIM) > 0
		for _, r := range m.DKIM {
			dkimOK = dkimOK && r.Err == nil
		}
		out("  %-24s at %-9s %s, DKIM %s", m.To, m.Provider, file, passFail(dkimOK))
	}
	return nil
}

// waitCopies waits until the providers hold want messages in all, and
// returns those sent to sendRecipients.
func waitCopies(ctx context.Context, want int, ps ...*sim.Provider) ([]sim.Message, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		var got []sim.Message
		n := 0
		for _, p := range ps {
			n += len(p.Messages())
			for _, r := range sendRecipients {
				got = append(got, p.MessagesTo(r)...)
			}
		}
		if n >= want {
			if n > want {
				return nil, fmt.Errorf("%d copies delivered for %d recipients: the retry sent again", n-want+len(sendRecipients), len(sendRecipients))
			}
			return got, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("the HTTP send's copies: %d of %d arrived", n, want)
		case <-time.After(50 * time.Millisecond): // the receivers' counts: poll
		}
	}
}

// postJSON posts body with the token and an Idempotency-Key and decodes
// the answer into v.
func postJSON(ctx context.Context, url, token, key string, body []byte, v any) (int, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, err
	}
	if resp.StatusCode == http.StatusAccepted {
		if err := json.Unmarshal(raw, v); err != nil {
			return 0, nil, err
		}
	} else {
		return resp.StatusCode, resp.Header, fmt.Errorf("POST %s: %s: %s", url, resp.Status, strings.TrimSpace(string(raw)))
	}
	return resp.StatusCode, resp.Header, nil
}

// attachmentName reads the message back as a mail reader would and
// names its attachment, with its type and size.
func attachmentName(data []byte) string {
	mr, err := mail.CreateReader(bytes.NewReader(data))
	if err != nil {
		return "unreadable: " + err.Error()
	}
	for range 16 { // a certificate mail has a few parts
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		if h, ok := p.Header.(*mail.AttachmentHeader); ok {
			name, _ := h.Filename()
			ct, _, _ := h.ContentType()
			body, _ := io.ReadAll(io.LimitReader(p.Body, 1<<20))
			return fmt.Sprintf("attachment %s (%s, %d bytes)", name, ct, len(body))
		}
	}
	return "no attachment"
}

// demoCertificate is a self-signed certificate for the send, as an
// issuer's portal would hold the customer's.
func demoCertificate() (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42_2026), Subject: pkix.Name{CommonName: "ana.example.com", Organization: []string{"Empresa Ejemplo S.A."}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0), DNSNames: []string{"ana.example.com"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}

func passFail(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}
