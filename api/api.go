package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/quarantine"
	"github.com/certgate/certgate/store"
)

// Deps are what the API calls.
type Deps struct {
	Store  quarantine.Reader // read through quarantine, which keeps to the caller's tenants
	Desk   *quarantine.Desk
	Tokens *Tokens
	Log    *slog.Logger
	// Placement serves the seed mailboxes' results and tests; its zero
	// value answers those routes with 404 not_configured.
	Placement Placement
	// Lanes reads and changes the delivery lanes; nil answers those
	// routes with 404 not_configured.
	Lanes LaneControl
	// Kit builds a tenant's allowlisting kit; nil answers with 404
	// not_configured.
	Kit KitSource
	// DNS gives the DNS self-check's report; nil answers GET /api/v1/dns
	// with 404 not_configured.
	DNS DNSReports
	// Send composes and sends mail (POST /api/v1/send); its zero value
	// answers with 404 not_configured.
	Send Sending
}

// API is the helpdesk's and the issuer's JSON API: find mail, see what
// became of it, release it, revoke its links. Every call that changes
// something is recorded on the message with who asked and from where.
type API struct {
	store       quarantine.Reader
	desk        *quarantine.Desk
	tokens      *Tokens
	log         *slog.Logger
	placement   Placement
	laneControl LaneControl
	kitSource   KitSource
	dnsReports  DNSReports
	sending     Sending
}

// New builds the API.
func New(d Deps) *API {
	return &API{store: d.Store, desk: d.Desk, tokens: d.Tokens, log: d.Log, placement: d.Placement, laneControl: d.Lanes, kitSource: d.Kit, dnsReports: d.DNS, sending: d.Send}
}

// Route is one API endpoint and the scope it takes.
type Route struct {
	Method, Path string
	Scope        config.Scope
	handler      http.HandlerFunc
}

// Routes lists the API's endpoints; docs/openapi.yaml describes each one,
// and a test holds the two together.
func (a *API) Routes() []Route {
	return []Route{
		{"GET", "/api/v1/messages", config.ScopeRead, a.search},
		{"GET", "/api/v1/messages/{id}", config.ScopeRead, a.message},
		{"POST", "/api/v1/messages/{id}/release", config.ScopeRelease, a.releaseOne},
		{"POST", "/api/v1/release", config.ScopeRelease, a.releaseBatch},
		{"POST", "/api/v1/messages/{id}/links/revoke", config.ScopeRelease, a.revoke},
		{"GET", "/api/v1/placement", config.ScopeRead, a.seeded(a.placementSummary)},
		{"POST", "/api/v1/placement/tests", config.ScopeAdmin, a.seeded(a.placementTest)},
		{"GET", "/api/v1/placement/tests/{id}", config.ScopeRead, a.seeded(a.placementTestResult)},
		{"GET", "/api/v1/lanes", config.ScopeRead, a.withLanes(a.lanes)},
		{"POST", "/api/v1/lanes/{name}/pause", config.ScopeAdmin, a.withLanes(a.lanePause(false))},
		{"POST", "/api/v1/lanes/{name}/resume", config.ScopeAdmin, a.withLanes(a.lanePause(true))},
		{"POST", "/api/v1/lanes/{name}/rate", config.ScopeAdmin, a.withLanes(a.laneRate)},
		{"GET", "/api/v1/kit", config.ScopeRead, a.kit},
		{"GET", "/api/v1/dns", config.ScopeRead, a.dns},
		{"POST", "/api/v1/send", config.ScopeSend, a.withSend(a.send)},
		{"POST", "/api/v1/send/preview", config.ScopeSend, a.withSend(a.sendPreview)},
	}
}

// Register adds the API's routes to mux, each behind its scope; serves
// the OpenAPI description without authentication; and answers any other
// path under /api/ with a JSON 404.
func (a *API) Register(mux *http.ServeMux) {
	for _, r := range a.Routes() {
		mux.Handle(r.Method+" "+r.Path, a.tokens.Require(r.Scope, r.handler))
	}
	mux.HandleFunc("GET /api/v1/openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(openAPI)
	})
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such API endpoint: "+r.Method+" "+r.URL.Path)
	})
}

// who is the audit trail's actor, "api:<token>@<client address>", and the
// scope the request used.
func who(r *http.Request) quarantine.Actor {
	name, scope, _ := Caller(r)
	return quarantine.Actor{Name: "api:" + name + "@" + r.RemoteAddr, Scope: scope}
}

// tenants are those whose mail the caller sees: every read and change
// goes through quarantine with them, where another tenant's message is
// not found.
func tenants(r *http.Request) quarantine.Tenants {
	_, _, in := Caller(r)
	return in
}

// oneTenant is the tenant of ?tenant=, or the token's only tenant; false
// when it answered already: 400 when the token has several and none is
// named, 404 for a tenant the token does not see.
func oneTenant(w http.ResponseWriter, r *http.Request) (string, bool) {
	tenant := r.URL.Query().Get("tenant")
	if tenant == "" {
		var ok bool
		if tenant, ok = tenants(r).Single(); !ok {
			writeError(w, http.StatusBadRequest, "bad_request", "this token has several tenants: say which with ?tenant=")
			return "", false
		}
	}
	if !tenants(r).Has(tenant) {
		writeError(w, http.StatusNotFound, "not_found", "no tenant "+tenant+" for this token")
		return "", false
	}
	return tenant, true
}

// message: GET /api/v1/messages/{id}?events_limit=&events_after=
func (a *API) message(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	page, ok := eventPage(w, r)
	if !ok {
		return
	}
	v, err := quarantine.MessagePage(r.Context(), a.store, id, page, tenants(r))
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", "no message with id "+id)
		return
	}
	if err != nil {
		a.internal(w, "reading message", err)
		return
	}
	out := messageJSON(v)
	a.addHolds(r, v, &out)
	if err := a.addPlacements(r, &out); err != nil {
		a.internal(w, "reading placements", err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// eventPage reads the message view's page of events: the latest
// events_limit (default 100), before the events_after of a previous page.
func eventPage(w http.ResponseWriter, r *http.Request) (store.EventPage, bool) {
	q := r.URL.Query()
	p := store.EventPage{Limit: store.DefaultEventPage}
	if v := q.Get("events_limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxEventPage {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("events_limit must be a whole number from 1 to %d", store.MaxEventPage))
			return p, false
		}
		p.Limit = n
	}
	if v := q.Get("events_after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "bad_request", "events_after must be the events_next of a previous page")
			return p, false
		}
		p.Before = n
	}
	return p, true
}

// search: GET /api/v1/messages?recipient=&tenant=&state=&since=&until=&after=&limit=
func (a *API) search(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	query := store.Query{Tenant: q.Get("tenant"), Recipient: q.Get("recipient"), State: store.State(q.Get("state")), After: q.Get("after")}
	switch query.State {
	case "", store.StateQueued, store.StateHeld, store.StateDelivered, store.StateBounced:
	default:
		writeError(w, http.StatusBadRequest, "bad_request", "state must be queued, held, delivered or bounced")
		return
	}
	for _, p := range []struct {
		name string
		to   *time.Time
	}{{"since", &query.Since}, {"until", &query.Until}} {
		if v := q.Get(p.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeError(w, http.StatusBadRequest, "bad_request", p.name+" must be an RFC 3339 time, such as 2026-11-20T09:30:00Z")
				return
			}
			*p.to = t
		}
	}
	query.Limit = 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			writeError(w, http.StatusBadRequest, "bad_request", "limit must be a whole number from 1 to 500")
			return
		}
		query.Limit = n
	}
	msgs, err := quarantine.Search(r.Context(), a.store, query, tenants(r))
	if err != nil {
		a.internal(w, "searching", err)
		return
	}
	out := struct {
		Messages []apiSummary `json:"messages"`
		Next     string       `json:"next,omitempty"` // pass as after= for the next page
	}{Messages: []apiSummary{}}
	for _, m := range msgs {
		out.Messages = append(out.Messages, apiSummary{ID: m.ID, Tenant: m.Tenant, MailFrom: m.MailFrom, HeaderFrom: m.HeaderFrom,
			MessageID: m.MessageID, Subject: m.Subject, Class: m.Class, ReceivedAt: m.ReceivedAt.UTC()})
	}
	if len(msgs) == query.Limit {
		out.Next = msgs[len(msgs)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

type releaseResult struct {
	ID       string   `json:"id"`
	Requeued []string `json:"requeued"` // recipients certgate was holding, now queued for delivery
}

// releaseOne marks one message safe: held copies go out, pending links turn
// on. Releasing again changes nothing but is recorded.
func (a *API) releaseOne(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Reason string `json:"reason"`
	}
	if !decodeOptional(w, r, &body) {
		return
	}
	res, err := a.release(r, r.PathValue("id"), body.Reason)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, "not_found", "no message with id "+r.PathValue("id"))
		return
	}
	if err != nil {
		a.internal(w, "releasing", err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// releaseBatch: POST /api/v1/release {"ids": [...]} or {"recipient": "..."}.
func (a *API) releaseBatch(w http.ResponseWriter, r *http.Request) {
	var body struct {
		IDs       []string `json:"ids"`
		Recipient string   `json:"recipient"`
		Tenant    string   `json:"tenant"`
		Reason    string   `json:"reason"`
	}
	if !decodeOptional(w, r, &body) {
		return
	}
	if (len(body.IDs) == 0) == (body.Recipient == "") {
		writeError(w, http.StatusBadRequest, "bad_request", `give either "ids" or "recipient"`)
		return
	}
	if len(body.IDs) > 500 {
		writeError(w, http.StatusBadRequest, "bad_request", "at most 500 ids at once")
		return
	}
	ids := body.IDs
	if body.Recipient != "" {
		msgs, err := quarantine.Search(r.Context(), a.store, store.Query{Recipient: body.Recipient, Tenant: body.Tenant, Limit: 500}, tenants(r))
		if err != nil {
			a.internal(w, "searching", err)
			return
		}
		for _, m := range msgs {
			ids = append(ids, m.ID)
		}
	}
	out := struct {
		Released []releaseResult `json:"released"`
		NotFound []string        `json:"not_found"`
	}{Released: []releaseResult{}, NotFound: []string{}}
	for _, id := range ids {
		res, err := a.release(r, id, body.Reason)
		switch {
		case errors.Is(err, store.ErrNotFound):
			out.NotFound = append(out.NotFound, id)
		case err != nil:
			a.internal(w, "releasing", err)
			return
		default:
			out.Released = append(out.Released, res)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) release(r *http.Request, id, reason string) (releaseResult, error) {
	pend, err := a.desk.Release(r.Context(), id, tenants(r), who(r), reason)
	if err != nil {
		return releaseResult{}, err
	}
	res := releaseResult{ID: id, Requeued: []string{}}
	for _, p := range pend {
		res.Requeued = append(res.Requeued, p.Address)
	}
	return res, nil
}

// revoke: POST /api/v1/messages/{id}/links/revoke {"recipient": "...", "reason": "..."}
func (a *API) revoke(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Recipient string `json:"recipient"`
		Reason    string `json:"reason"`
	}
	if !decodeOptional(w, r, &body) {
		return
	}
	id := r.PathValue("id")
	n, err := a.desk.Revoke(r.Context(), id, body.Recipient, tenants(r), who(r), body.Reason)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, "not_found", "no message with id "+id)
	case errors.Is(err, quarantine.ErrNoRecipient):
		writeError(w, http.StatusNotFound, "not_found", "message "+id+" has no recipient "+body.Recipient)
	case err != nil:
		a.internal(w, "revoking", err)
	default:
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "revoked": n})
	}
}

func (a *API) internal(w http.ResponseWriter, what string, err error) {
	a.log.Error("api: "+what, "err", err)
	writeError(w, http.StatusInternalServerError, "internal", what+" failed; try again")
}

// decodeOptional reads a JSON body if there is one (at most 64 KiB).
func decodeOptional(w http.ResponseWriter, r *http.Request, v any) bool {
	if r.ContentLength == 0 {
		return true
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("the body is not the JSON this call takes: %v", err))
		return false
	}
	return true
}

type apiSummary struct {
	ID         string    `json:"id"`
	Tenant     string    `json:"tenant"`
	MailFrom   string    `json:"mail_from"`
	HeaderFrom string    `json:"header_from"`
	MessageID  string    `json:"message_id"`
	Subject    string    `json:"subject"`
	Class      string    `json:"class"`
	ReceivedAt time.Time `json:"received_at"`
}

type apiMessage struct {
	apiSummary
	Size       int64          `json:"size"`
	ClientAddr string         `json:"client_addr"`
	AuthUser   string         `json:"auth_user,omitempty"`
	Recipients []apiRecipient `json:"recipients"`
	Links      []apiLink      `json:"links"`
	Events     []apiEvent     `json:"events"`
	EventsNext string         `json:"events_next,omitempty"` // pass as events_after for the page before
}

type apiRecipient struct {
	Address     string     `json:"address"`
	State       string     `json:"state"`
	Attempts    int        `json:"attempts"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	Provider    string     `json:"provider,omitempty"`
	LastCode    int        `json:"last_code,omitempty"`
	LastReply   string     `json:"last_reply,omitempty"`
	TrackingID  string     `json:"tracking_id"`
	UpdatedAt   time.Time  `json:"updated_at"`
	// Seed names the seed mailbox of a seed copy: certgate's own
	// measurement, not a customer's delivery.
	Seed      string        `json:"seed,omitempty"`
	Placement *apiPlacement `json:"placement,omitempty"`
	// Held says what keeps a copy that is due now from leaving, and when
	// it is expected to leave.
	Held *apiHold `json:"held,omitempty"`
}

type apiLink struct {
	ID        int64      `json:"id"`
	Recipient string     `json:"recipient"`
	URL       string     `json:"url"`
	State     string     `json:"state"`
	Uses      int        `json:"uses"`
	MaxUses   int        `json:"max_uses"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Refusals  int64      `json:"refusals"`
	Recent    []apiPress `json:"recent_refusals"`
}

// apiPress is a refused press of a link's button.
type apiPress struct {
	Time      time.Time `json:"time"`
	Reason    string    `json:"reason"`
	Client    string    `json:"client"`
	UserAgent string    `json:"user_agent"`
}

type apiEvent struct {
	Time      time.Time `json:"time"`
	Kind      string    `json:"kind"`
	Actor     string    `json:"actor"`
	Recipient string    `json:"recipient,omitempty"`
	Detail    string    `json:"detail"`
	Count     int64     `json:"count"`
}

func messageJSON(v *store.MessageView) apiMessage {
	m := v.Message
	out := apiMessage{apiSummary: apiSummary{ID: m.ID, Tenant: m.Tenant, MailFrom: m.MailFrom, HeaderFrom: m.HeaderFrom,
		MessageID: m.MessageID, Subject: m.Subject, Class: m.Class, ReceivedAt: m.ReceivedAt.UTC()},
		Size: m.Size, ClientAddr: m.ClientAddr, AuthUser: m.AuthUser,
		Recipients: []apiRecipient{}, Links: []apiLink{}, Events: []apiEvent{}}
	byID := map[int64]string{}
	for _, r := range v.Recipients {
		byID[r.ID] = r.Address
		ar := apiRecipient{Address: r.Address, State: string(r.State), Attempts: r.Attempts, Provider: r.Provider,
			LastCode: r.LastCode, LastReply: r.LastReply, TrackingID: r.TrackingID, UpdatedAt: r.UpdatedAt.UTC(), Seed: r.Seed}
		if r.State == store.StateQueued {
			t := r.NextAttempt.UTC()
			ar.NextAttempt = &t
		}
		out.Recipients = append(out.Recipients, ar)
	}
	for _, l := range v.Links {
		al := apiLink{ID: l.ID, Recipient: byID[l.RecipientID], URL: URLOrigin(l.URL), State: string(l.State), Uses: l.Uses, MaxUses: l.MaxUses,
			Refusals: l.Refusals.Count, Recent: []apiPress{}}
		for _, p := range l.Refusals.Recent {
			al.Recent = append(al.Recent, apiPress{Time: p.Time.UTC(), Reason: p.Reason, Client: p.Client, UserAgent: p.UserAgent})
		}
		if !l.ExpiresAt.IsZero() {
			t := l.ExpiresAt.UTC()
			al.ExpiresAt = &t
		}
		out.Links = append(out.Links, al)
	}
	for _, e := range v.Events {
		out.Events = append(out.Events, apiEvent{Time: e.Time.UTC(), Kind: e.Kind, Actor: e.Actor,
			Recipient: byID[e.RecipientID], Detail: e.Detail, Count: max(e.Count, 1)})
	}
	if v.OlderEvents != 0 {
		out.EventsNext = strconv.FormatInt(v.OlderEvents, 10)
	}
	return out
}

// URLOrigin is what the API and the console show of an issuer's
// download URL: its path and query are the credential the gate protects,
// so only the origin is shown.
func URLOrigin(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return ""
	}
	return p.Scheme + "://" + p.Host + "/…"
}
