package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
)

// PlacementReader is what the placement routes read of the store.
type PlacementReader interface {
	Placements(ctx context.Context, q store.PlacementQuery) ([]store.Placement, error)
	PlacementCounts(ctx context.Context, q store.PlacementQuery) ([]store.PlacementCount, error)
}

// PlacementTester sends a message to every seed mailbox for tenant, as
// actor, and returns its message id once it is durable. A message the
// gateway refuses is a *Refusal.
type PlacementTester func(ctx context.Context, tenant string, eml []byte, actor string) (string, error)

// Refusal is a submission the gateway refused, with its reason code
// ("alignment", "syntax", ...) and the text it would have answered;
// Temporary for a 4xx (memory, queue full): try again later.
type Refusal struct {
	Temporary       bool
	Reason, Message string
}

func (r *Refusal) Error() string { return r.Message }

// Placement is the seed side of the API; nil fields turn its routes off
// (404, as for a path that does not exist).
type Placement struct {
	Reader   PlacementReader
	Tester   PlacementTester
	Seeds    []config.SeedMailbox
	MaxBytes int64 // largest test message taken
}

// apiPlacement is one seed copy's placement.
type apiPlacement struct {
	Seed        string          `json:"seed"`
	Provider    string          `json:"provider"`
	Address     string          `json:"address"`
	Folder      string          `json:"folder"`
	MessageID   string          `json:"message_id"`
	Tenant      string          `json:"tenant"`
	DeliveredAt *time.Time      `json:"delivered_at,omitempty"`
	ArrivedAt   *time.Time      `json:"arrived_at,omitempty"`
	DetectedAt  *time.Time      `json:"detected_at,omitempty"`
	Delay       *float64        `json:"delay_seconds,omitempty"` // from the receiver's 250 to arrival
	Verdicts    json.RawMessage `json:"verdicts,omitempty"`
	Moves       []apiMove       `json:"moves"`
	Closed      bool            `json:"closed"`
}

type apiMove struct {
	From string    `json:"from"`
	To   string    `json:"to"`
	At   time.Time `json:"at"`
}

func optTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func (a *API) placementJSON(p store.Placement) apiPlacement {
	out := apiPlacement{Seed: p.Seed, Provider: p.Provider, Address: p.Address, Folder: p.Folder, MessageID: p.MessageID,
		Tenant: p.Tenant, DeliveredAt: optTime(p.DeliveredAt), ArrivedAt: optTime(p.ArrivedAt), DetectedAt: optTime(p.DetectedAt),
		Verdicts: p.Verdicts, Moves: []apiMove{}, Closed: !p.ClosedAt.IsZero()}
	if out.Provider == "" {
		out.Provider = a.seedProvider(p.Seed) // not delivered yet: the lane it is meant for
	}
	if !p.DeliveredAt.IsZero() && !p.ArrivedAt.IsZero() {
		d := max(p.ArrivedAt.Sub(p.DeliveredAt), 0).Seconds()
		out.Delay = &d
	}
	for _, m := range p.Moves {
		out.Moves = append(out.Moves, apiMove{From: m.From, To: m.To, At: m.At.UTC()})
	}
	return out
}

func (a *API) seedProvider(seed string) string {
	for _, s := range a.placement.Seeds {
		if s.Name == seed {
			return s.Provider
		}
	}
	return ""
}

// placementQuery reads provider=, tenant= and since=, narrowed to the
// caller's tenants; false when it answered already.
func placementQuery(w http.ResponseWriter, r *http.Request) (store.PlacementQuery, bool) {
	q := r.URL.Query()
	pq := store.PlacementQuery{Provider: q.Get("provider")}
	var requested []string
	if t := q.Get("tenant"); t != "" {
		requested = []string{t}
	}
	names, ok := tenants(r).Narrow(requested)
	if !ok {
		writeJSON(w, http.StatusOK, placementSummary{Providers: []providerPlacement{}, Recent: []apiPlacement{}})
		return pq, false
	}
	pq.Tenants = names
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", "since must be an RFC 3339 time, such as 2026-11-20T09:30:00Z")
			return pq, false
		}
		pq.Since = t
	}
	return pq, true
}

type providerPlacement struct {
	Provider string           `json:"provider"`
	Total    int64            `json:"total"`
	Folders  map[string]int64 `json:"folders"`
	// InboxRate is the inbox's share of the copies whose fate is known
	// (pending ones left out); null before any is.
	InboxRate *float64 `json:"inbox_rate"`
}

type placementSummary struct {
	Providers []providerPlacement `json:"providers"`
	Recent    []apiPlacement      `json:"recent"`
}

// placementSummary: GET /api/v1/placement?provider=&tenant=&since=
func (a *API) placementSummary(w http.ResponseWriter, r *http.Request) {
	pq, ok := placementQuery(w, r)
	if !ok {
		return
	}
	counts, err := a.placement.Reader.PlacementCounts(r.Context(), pq)
	if err != nil {
		a.internal(w, "counting placements", err)
		return
	}
	out := placementSummary{Providers: []providerPlacement{}, Recent: []apiPlacement{}}
	index := map[string]int{}
	for _, c := range counts {
		i, seen := index[c.Provider]
		if !seen {
			i = len(out.Providers)
			index[c.Provider] = i
			out.Providers = append(out.Providers, providerPlacement{Provider: c.Provider, Folders: map[string]int64{}})
		}
		pp := &out.Providers[i]
		pp.Total += c.Count
		pp.Folders[c.Folder] += c.Count
	}
	for i := range out.Providers {
		pp := &out.Providers[i]
		if known := pp.Total - pp.Folders[store.FolderPending]; known > 0 {
			rate := float64(pp.Folders[store.FolderInbox]) / float64(known)
			pp.InboxRate = &rate
		}
	}
	pq.Limit = 50
	recent, err := a.placement.Reader.Placements(r.Context(), pq)
	if err != nil {
		a.internal(w, "reading placements", err)
		return
	}
	for _, p := range recent {
		out.Recent = append(out.Recent, a.placementJSON(p))
	}
	writeJSON(w, http.StatusOK, out)
}

// placementTest: POST /api/v1/placement/tests?tenant= with the message as
// message/rfc822.
func (a *API) placementTest(w http.ResponseWriter, r *http.Request) {
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct != "message/rfc822" {
		writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "send the message as Content-Type: message/rfc822")
		return
	}
	tenant, ok := oneTenant(w, r)
	if !ok {
		return
	}
	eml, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.placement.MaxBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", "the message is larger than smtp.max_message_bytes")
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "reading the message: "+err.Error())
		return
	}
	id, err := a.placement.Tester(r.Context(), tenant, crlf(eml), who(r).Name)
	var refused *Refusal
	if errors.As(err, &refused) {
		status := http.StatusUnprocessableEntity
		switch {
		case refused.Temporary:
			status = http.StatusServiceUnavailable
		case refused.Reason == "size":
			status = http.StatusRequestEntityTooLarge
		}
		writeError(w, status, refused.Reason, refused.Message)
		return
	}
	if err != nil {
		a.internal(w, "sending the test", err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": id})
}

// placementTestResult: GET /api/v1/placement/tests/{id}
func (a *API) placementTestResult(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	names, ok := tenants(r).Narrow(nil)
	var found []store.Placement
	if ok && id != "" {
		var err error
		found, err = a.placement.Reader.Placements(r.Context(), store.PlacementQuery{MessageID: id, Tenants: names, Limit: 500})
		if err != nil {
			a.internal(w, "reading placements", err)
			return
		}
	}
	if len(found) == 0 {
		writeError(w, http.StatusNotFound, "not_found", "no placement test with id "+id)
		return
	}
	out := struct {
		ID      string         `json:"id"`
		State   string         `json:"state"` // running until every copy is found or missing
		Results []apiPlacement `json:"results"`
	}{ID: id, State: "done", Results: []apiPlacement{}}
	for _, p := range found {
		if p.Folder == store.FolderPending {
			out.State = "running"
		}
		out.Results = append(out.Results, a.placementJSON(p))
	}
	writeJSON(w, http.StatusOK, out)
}

// seeded answers 404 not_configured when there are no seed mailboxes.
func (a *API) seeded(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.placement.Reader == nil || a.placement.Tester == nil {
			writeError(w, http.StatusNotFound, "not_configured", "no seed mailboxes are configured (seeds.mailboxes)")
			return
		}
		h(w, r)
	}
}

// addPlacements puts each seed copy's placement on its recipient in a
// message view already checked to be the caller's.
func (a *API) addPlacements(r *http.Request, m *apiMessage) error {
	if a.placement.Reader == nil {
		return nil
	}
	seeded := false
	for _, rc := range m.Recipients {
		seeded = seeded || rc.Seed != ""
	}
	if !seeded {
		return nil
	}
	found, err := a.placement.Reader.Placements(r.Context(), store.PlacementQuery{MessageID: m.ID, Limit: 500})
	if err != nil {
		return err
	}
	for _, p := range found {
		for i := range m.Recipients {
			if m.Recipients[i].TrackingID == p.TrackingID {
				ap := a.placementJSON(p)
				m.Recipients[i].Placement = &ap
			}
		}
	}
	return nil
}

// crlf ends every line of a message with CRLF, as SMTP's DATA would have
// it: .eml files saved on Unix end lines with LF. An HTTP body has no SMTP
// framing, so there is nothing to smuggle here; a lone CR stays and is
// refused as in SMTP.
func crlf(msg []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
}
