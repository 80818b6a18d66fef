package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/certgate/certgate/compose"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
)

// Sending is the send API's share of the API; a nil Sender answers its
// routes with 404 not_configured.
type Sending struct {
	Templates *compose.Templates
	Sender    Sender
	// Keys keeps Idempotency-Key answers; nil refuses the header (400).
	Keys store.Idempotency
	// MaxBytes caps the JSON body (api.send_max_bytes).
	MaxBytes int64
	// Tenant finds the tenant whose from_domains cover domain.
	Tenant func(domain string) (SendTenant, bool)
	// Hostname makes the Message-ID (hostname).
	Hostname string
	Now      func() time.Time
}

// SendTenant is what the send API needs of a tenant.
type SendTenant struct {
	Name, DisplayName, SupportEmail, SupportURL string
	GatePrefixes                                []string // links.gate
	MaxRecipients                               int      // max_recipients_per_send
	Classes                                     []config.Class
}

// Sender makes a composed message durable as the tenant's mail (the
// relay, through the same preparation as SMTP mail). A message the
// gateway refuses is a *Refusal.
type Sender func(ctx context.Context, m Outgoing) (*Sent, error)

// Outgoing is a composed message to send.
type Outgoing struct {
	Tenant, From string
	Rcpts        []string
	Data         []byte
	Class        config.Class // "": the tenant's default
	Hold         bool
	Actor        string // "api:<token>@<client>"
	ClientIP     netip.Addr
	TLS          bool
	Format       string
}

// Sent is the 202 answer: the message id and each recipient's.
type Sent struct {
	ID         string          `json:"id"`
	Recipients []SentRecipient `json:"recipients"`
}

// SentRecipient is one recipient's copy: its id is the copy's tracking
// id, as GET /api/v1/messages/{id} shows it.
type SentRecipient struct {
	Address string `json:"address"`
	ID      string `json:"id"`
}

// IdempotencyTTL is how long an Idempotency-Key's answer is kept.
const IdempotencyTTL = 24 * time.Hour

func (a *API) withSend(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.sending.Sender == nil || a.sending.Templates == nil {
			writeError(w, http.StatusNotFound, "not_configured", "the send API is not configured")
			return
		}
		h(w, r)
	}
}

// send: POST /api/v1/send.
func (a *API) send(w http.ResponseWriter, r *http.Request) { a.compose(w, r, false) }

// sendPreview: POST /api/v1/send/preview, the message as composed,
// before preparation: unsigned, its links not yet gated.
func (a *API) sendPreview(w http.ResponseWriter, r *http.Request) { a.compose(w, r, true) }

func (a *API) compose(w http.ResponseWriter, r *http.Request, preview bool) {
	s := &a.sending
	now := time.Now()
	if s.Now != nil {
		now = s.Now()
	}
	maxBytes := s.MaxBytes
	if maxBytes <= 0 {
		maxBytes = config.DefaultSendMaxBytes
	}
	body, err := readBody(w, r, maxBytes)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeFieldError(w, http.StatusRequestEntityTooLarge, "too_large",
				fmt.Sprintf("the body is over %d bytes (api.send_max_bytes)", maxBytes), "")
			return
		}
		writeError(w, http.StatusBadRequest, "bad_request", "reading the body: "+err.Error())
		return
	}
	if !preview {
		key := r.Header.Get("Idempotency-Key")
		if key != "" {
			done, finish := a.idempotent(w, r, key, body, now)
			if done {
				return
			}
			rec := &recorder{ResponseWriter: w}
			defer finish(rec)
			w = rec
		}
	}
	req, err := compose.Decode(bytes.NewReader(body), maxBytes)
	if err != nil {
		badRequest(w, err)
		return
	}
	t, ok := a.sendTenant(w, r, req.From)
	if !ok {
		return
	}
	if n := uniqueCount(req.Emails); n > t.MaxRecipients {
		writeFieldError(w, http.StatusRequestEntityTooLarge, "too_many_recipients",
			fmt.Sprintf("%d recipients; tenant %s sends to at most %d at once (tenants[].max_recipients_per_send)", n, t.Name, t.MaxRecipients), "emails")
		return
	}
	var class config.Class
	if req.Class != "" {
		c, ok := config.ParseClass(req.Class)
		if !ok {
			writeFieldError(w, http.StatusBadRequest, "bad_request", "class must be bulk or transactional", "class")
			return
		}
		if t.Classes != nil && !slices.Contains(t.Classes, c) {
			writeFieldError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("tenant %s may not send %s mail (tenants[].classes)", t.Name, c), "class")
			return
		}
		class = c
	}
	msg, err := s.Templates.Compose(req, compose.Options{Tenant: t.Name, DisplayName: t.DisplayName, SupportEmail: t.SupportEmail,
		SupportURL: t.SupportURL, Now: now, MessageID: store.NewMessageID(now) + "@" + s.Hostname, GatePrefixes: t.GatePrefixes})
	if err != nil {
		var fe *compose.FieldError
		if errors.As(err, &fe) {
			badRequest(w, err)
			return
		}
		a.internal(w, "composing", err)
		return
	}
	if len(msg.Recipients) > t.MaxRecipients {
		writeFieldError(w, http.StatusRequestEntityTooLarge, "too_many_recipients",
			fmt.Sprintf("%d recipients; tenant %s sends to at most %d at once", len(msg.Recipients), t.Name, t.MaxRecipients), "emails")
		return
	}
	if preview {
		w.Header().Set("Content-Type", "message/rfc822")
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		w.Write(msg.Data)
		return
	}
	name, _, _ := Caller(r)
	ip, _ := clientIP(r)
	sent, err := s.Sender(r.Context(), Outgoing{Tenant: t.Name, From: req.From, Rcpts: msg.Recipients, Data: msg.Data,
		Class: class, Hold: req.Hold, Actor: who(r).Name, ClientIP: ip, TLS: r.TLS != nil, Format: req.CertificateCollectFormat})
	var ref *Refusal
	switch {
	case errors.As(err, &ref):
		refused(w, ref)
		return
	case err != nil:
		a.internal(w, "sending", err)
		return
	}
	a.log.Info("api: sent", "token", name, "client", ip, "tenant", t.Name, "id", sent.ID,
		"format", req.CertificateCollectFormat, "recipients", len(sent.Recipients))
	writeJSON(w, http.StatusAccepted, sent)
}

// sendTenant is the tenant whose from_domains cover from, which must be
// one of the caller's; false when it answered already.
func (a *API) sendTenant(w http.ResponseWriter, r *http.Request, from string) (SendTenant, bool) {
	addr, err := mail.ParseAddress(from)
	if err != nil {
		writeFieldError(w, http.StatusBadRequest, "bad_request", "from is not an address", "from")
		return SendTenant{}, false
	}
	at := strings.LastIndexByte(addr.Address, '@')
	domain := strings.ToLower(strings.TrimSuffix(addr.Address[at+1:], "."))
	t, ok := a.sending.Tenant(domain)
	if !ok {
		writeFieldError(w, http.StatusForbidden, "forbidden", "no tenant sends from "+domain+" (tenants[].from_domains)", "from")
		return SendTenant{}, false
	}
	if !tenants(r).Has(t.Name) {
		writeFieldError(w, http.StatusForbidden, "forbidden", "this token may not send as "+domain+"'s tenant", "from")
		return SendTenant{}, false
	}
	return t, true
}

// refused answers a gateway refusal: a class the tenant may not use is
// 403; a size limit 413; a temporary one (memory, queue, rate) 503;
// anything else (a From without an aligned DKIM key, say) 400.
func refused(w http.ResponseWriter, ref *Refusal) {
	switch {
	case ref.Reason == "class":
		writeFieldError(w, http.StatusForbidden, "forbidden", ref.Message, "class")
	case ref.Reason == "alignment":
		writeFieldError(w, http.StatusBadRequest, "refused", ref.Message, "from")
	case ref.Reason == "size":
		writeFieldError(w, http.StatusRequestEntityTooLarge, "too_large", ref.Message, "")
	case ref.Temporary:
		w.Header().Set("Retry-After", "30")
		writeError(w, http.StatusServiceUnavailable, "unavailable", ref.Message)
	default:
		writeError(w, http.StatusBadRequest, "refused", ref.Message)
	}
}

func badRequest(w http.ResponseWriter, err error) {
	var fe *compose.FieldError
	if errors.As(err, &fe) {
		writeFieldError(w, http.StatusBadRequest, "bad_request", fe.Reason, fe.Field)
		return
	}
	writeError(w, http.StatusBadRequest, "bad_request", err.Error())
}

// idempotent handles an Idempotency-Key: a replay of a call answered
// before gets its answer again; the key with another body, or while its
// first call is still under way, 409. Otherwise the key is claimed, and
// finish stores the answer (a 202) or frees the key (anything else: the
// call did nothing, and a retry may try again). done: answered already.
func (a *API) idempotent(w http.ResponseWriter, r *http.Request, key string, body []byte, now time.Time) (done bool, finish func(*recorder)) {
	if len(key) > 255 || strings.IndexFunc(key, func(c rune) bool { return c < 0x21 || c > 0x7e }) >= 0 {
		writeError(w, http.StatusBadRequest, "bad_request", "Idempotency-Key must be 1 to 255 visible ASCII characters")
		return true, nil
	}
	keys := a.sending.Keys
	if keys == nil {
		writeError(w, http.StatusBadRequest, "bad_request", "this certgate keeps no idempotency keys")
		return true, nil
	}
	name, _, _ := Caller(r)
	scoped := name + "\x00" + key
	hash := sha256.Sum256(body)
	c, err := keys.ReserveKey(r.Context(), scoped, hash, now, now.Add(IdempotencyTTL))
	if err != nil {
		a.internal(w, "reserving the idempotency key", err)
		return true, nil
	}
	if !c.Claimed {
		switch {
		case c.BodyHash != hash:
			writeError(w, http.StatusConflict, "idempotency_key_reused", "this Idempotency-Key was used with another body")
		case c.Status == 0:
			writeError(w, http.StatusConflict, "idempotency_key_in_use",
				"a call with this Idempotency-Key is under way (or was cut short); look for its message before sending again")
		default:
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("Idempotent-Replayed", "true")
			w.WriteHeader(c.Status)
			w.Write(c.Response)
		}
		return true, nil
	}
	return false, func(rec *recorder) {
		// The answer is stored even when the client has gone.
		ctx := context.WithoutCancel(r.Context())
		if rec.status == http.StatusAccepted {
			if err := keys.RememberKey(ctx, scoped, rec.status, rec.body.Bytes()); err != nil {
				a.log.Error("api: storing an idempotency key's answer", "err", err)
			}
			return
		}
		if err := keys.ForgetKey(ctx, scoped); err != nil {
			a.log.Error("api: freeing an idempotency key", "err", err)
		}
	}
}

// recorder keeps the status and body of an answer as it is written.
type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (rec *recorder) WriteHeader(code int) {
	rec.status = code
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	rec.body.Write(b)
	return rec.ResponseWriter.Write(b)
}

// readBody reads at most max bytes; over it, an *http.MaxBytesError.
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, error) {
	if r.ContentLength > max {
		return nil, &http.MaxBytesError{Limit: max}
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, max))
	return buf.Bytes(), err
}

// uniqueCount counts addresses as the receiver would see them repeated:
// case-insensitively.
func uniqueCount(list []string) int {
	seen := make(map[string]bool, len(list))
	for _, a := range list {
		seen[strings.ToLower(strings.TrimSpace(a))] = true
	}
	return len(seen)
}

func clientIP(r *http.Request) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap(), true
	}
	ip, err := netip.ParseAddr(r.RemoteAddr)
	return ip, err == nil
}
