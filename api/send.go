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
// gateway refuses is a *Refusal. When m.Answer is set, the sender calls
// it with the Sent it will return, before the message is durable, and
// stores the answer it gives with the message (store.Message.Idempotency):
// it returns a Sent only once both are durable, and an error only when
// neither is.
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
	// Answer, for a call with an Idempotency-Key, is the key's answer
	// for the Sent the sender is about to return; nil without a key.
	Answer func(*Sent) *store.IdempotentAnswer
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

// IdempotencyClaim is how long a key is held for a call that has not
// answered: far longer than any call takes, it frees the key of a call
// cut short (certgate stopped) before it sent anything. A call slower
// than that still sends at most once: the store answers a key only over
// an unanswered claim, so of two calls only the first to spool does.
const IdempotencyClaim = 5 * time.Minute

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
	var claim *keyClaim
	if key := r.Header.Get("Idempotency-Key"); key != "" && !preview {
		var done bool
		if claim, done = a.idempotent(w, r, key, body, now); done {
			return
		}
		defer a.settle(r, claim)
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
	out := Outgoing{Tenant: t.Name, From: req.From, Rcpts: msg.Recipients, Data: msg.Data,
		Class: class, Hold: req.Hold, Actor: who(r).Name, ClientIP: ip, TLS: r.TLS != nil, Format: req.CertificateCollectFormat}
	if claim != nil {
		out.Answer = claim.answer
	}
	sent, err := s.Sender(r.Context(), out)
	var ref *Refusal
	switch {
	case errors.As(err, &ref):
		refused(w, ref)
		return
	case errors.Is(err, store.ErrKeyNotClaimed):
		// Another call with this key (after this one's claim lapsed)
		// sent first; this one sent nothing.
		writeError(w, http.StatusConflict, "idempotency_key_in_use",
			"another call with this Idempotency-Key sent first; retry to get its answer")
		return
	case err != nil:
		a.internal(w, "sending", err)
		return
	}
	a.log.Info("api: sent", "token", name, "client", ip, "tenant", t.Name, "id", sent.ID,
		"format", req.CertificateCollectFormat, "recipients", len(sent.Recipients))
	if claim == nil {
		writeJSON(w, http.StatusAccepted, sent)
		return
	}
	claim.sent = true
	if claim.response == nil {
		// The message is durable but its key has no answer: the key stays
		// claimed (409) rather than let a retry send again.
		a.log.Error("api: the sender stored no answer for the idempotency key", "token", name, "id", sent.ID)
		writeJSON(w, http.StatusAccepted, sent)
		return
	}
	writeJSONBytes(w, http.StatusAccepted, claim.response)
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

// keyClaim is a call's claim on its Idempotency-Key.
type keyClaim struct {
	key      string // scoped by the token
	hash     [32]byte
	expires  time.Time
	response []byte // the 202's body, as answer made it for the store
	sent     bool   // the sender made the message (and the answer) durable
}

// answer is Outgoing.Answer: the 202 for sent, kept to be written as it
// is stored, so that a replay is the same bytes.
func (c *keyClaim) answer(sent *Sent) *store.IdempotentAnswer {
	c.response = jsonBytes(sent)
	return &store.IdempotentAnswer{Key: c.key, BodyHash: c.hash, Status: http.StatusAccepted,
		Response: c.response, Expires: c.expires}
}

// idempotent handles an Idempotency-Key: a replay of a call answered
// before gets its answer again; the key with another body, or while its
// first call is still under way, 409. Otherwise the key is claimed for
// this call: its answer is stored with its message (claim.answer), and
// settle frees the key if it sent nothing. done: answered already.
func (a *API) idempotent(w http.ResponseWriter, r *http.Request, key string, body []byte, now time.Time) (claim *keyClaim, done bool) {
	if len(key) > 255 || strings.IndexFunc(key, func(c rune) bool { return c < 0x21 || c > 0x7e }) >= 0 {
		writeError(w, http.StatusBadRequest, "bad_request", "Idempotency-Key must be 1 to 255 visible ASCII characters")
		return nil, true
	}
	keys := a.sending.Keys
	if keys == nil {
		writeError(w, http.StatusBadRequest, "bad_request", "this certgate keeps no idempotency keys")
		return nil, true
	}
	name, _, _ := Caller(r)
	claim = &keyClaim{key: name + "\x00" + key, hash: sha256.Sum256(body), expires: now.Add(IdempotencyTTL)}
	c, err := keys.ReserveKey(r.Context(), claim.key, claim.hash, now, now.Add(IdempotencyClaim))
	if err != nil {
		a.internal(w, "reserving the idempotency key", err)
		return nil, true
	}
	if !c.Claimed {
		switch {
		case c.BodyHash != claim.hash:
			writeError(w, http.StatusConflict, "idempotency_key_reused", "this Idempotency-Key was used with another body")
		case c.Status == 0:
			writeError(w, http.StatusConflict, "idempotency_key_in_use",
				"a call with this Idempotency-Key is under way; retry with the same key later for its answer")
		default:
			w.Header().Set("Idempotent-Replayed", "true")
			writeJSONBytes(w, c.Status, c.Response)
		}
		return nil, true
	}
	return claim, false
}

// settle frees the key of a call that sent nothing (any answer but the
// 202: the call did nothing, and a retry may try again). A call that sent
// stored its answer with its message; ForgetKey would leave it anyway.
func (a *API) settle(r *http.Request, claim *keyClaim) {
	if claim.sent {
		return
	}
	// The key is freed even when the client has gone.
	if err := a.sending.Keys.ForgetKey(context.WithoutCancel(r.Context()), claim.key); err != nil {
		a.log.Error("api: freeing an idempotency key", "err", err)
	}
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
