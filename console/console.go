// Package console is the helpdesk's web console, /console/ on the HTTP
// listener: its pages and its sessions. A person signs in with an API
// token and gets a session scoped exactly like it (tenants, scopes); the
// pages find mail, show where it went and what the receivers said, and
// release it or revoke and re-enable its links, through the same
// quarantine calls as the API, each with a reason for the audit trail.
// Server-rendered with html/template, no scripts, no external assets.
package console

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/certgate/certgate/api"
	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/quarantine"
	"github.com/certgate/certgate/store"
)

// PlacementReader is what the message page reads of the seed mailboxes'
// results.
type PlacementReader interface {
	Placements(ctx context.Context, q store.PlacementQuery) ([]store.Placement, error)
}

// Options are what the console calls and how long its sessions last.
type Options struct {
	Store  quarantine.Reader // read through quarantine, which keeps to the session's tenants
	Desk   *quarantine.Desk
	Tokens *api.Tokens
	// Lanes reads and changes the delivery lanes; nil shows none.
	Lanes api.LaneControl
	// Placements are the seed copies' results; nil shows none.
	Placements PlacementReader
	Log        *slog.Logger
	// Clock times sessions and the sign-in limit; default clock.Real.
	Clock clock.Clock
	// SecureCookie marks the session cookie Secure even on a plain HTTP
	// request: http.public_url is https, so a proxy terminates TLS.
	SecureCookie bool
	// IdleTimeout, MaxAge and MaxSessions bound sessions (config's
	// console section; zero values take its defaults).
	IdleTimeout, MaxAge time.Duration
	MaxSessions         int
	// SessionKey (console.session_key_file, at least MinSessionKey
	// bytes) seals each session in its cookie, so that every node
	// holding the same key opens it; MaxSessions then does not apply.
	// Without it, sessions are kept in this node's memory.
	SessionKey []byte
	// SignInFailures limits failed sign-ins per client address (an IPv6
	// client by its /64); zero takes DefaultSignInFailures.
	SignInFailures quarantine.RateLimit
}

// DefaultSignInFailures lets a client fail to sign in 5 times at once,
// then once a minute: a person mistypes, a guesser gets nowhere.
var DefaultSignInFailures = quarantine.RateLimit{Burst: 5, Every: time.Minute}

// cookieName is the session cookie's.
const cookieName = "certgate_console"

// maxForm bounds a POSTed form: a token or a reason, and the form key.
const maxForm = 8 << 10

// Console serves the helpdesk console.
type Console struct {
	o        Options
	sessions sessionStore
	failures *quarantine.ClientLimiter
}

// New builds the console.
func New(o Options) *Console {
	if o.Clock == nil {
		o.Clock = clock.Real
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	def := config.DefaultConsole()
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = def.IdleTimeout.D()
	}
	if o.MaxAge <= 0 {
		o.MaxAge = def.MaxAge.D()
	}
	if o.MaxSessions <= 0 {
		o.MaxSessions = def.MaxSessions
	}
	if o.SignInFailures.Burst <= 0 || o.SignInFailures.Every <= 0 {
		o.SignInFailures = DefaultSignInFailures
	}
	var keep sessionStore = newSessions(o.Clock, o.IdleTimeout, o.MaxAge, o.MaxSessions)
	if o.SessionKey != nil {
		// config refuses a shorter key; a caller that skipped it must
		// not get sessions a guess could forge.
		if len(o.SessionKey) < MinSessionKey {
			panic(fmt.Sprintf("console: session key of %d bytes, want at least %d", len(o.SessionKey), MinSessionKey))
		}
		keep = newSealed(o.SessionKey, o.Tokens, o.Clock, o.IdleTimeout, o.MaxAge)
	}
	return &Console{o: o, sessions: keep,
		failures: quarantine.NewClientLimiter(o.SignInFailures, quarantine.DefaultLimiterKeys)}
}

// Register mounts the console under /console/ on mux.
func (c *Console) Register(mux *http.ServeMux) {
	m := http.NewServeMux()
	m.HandleFunc("GET /console/{$}", c.home)
	m.HandleFunc("POST /console/signin", c.signIn)
	m.HandleFunc("POST /console/signout", c.action("", c.signOut))
	m.HandleFunc("GET /console/messages/{id}", c.page(c.message))
	m.HandleFunc("POST /console/messages/{id}/release", c.action(config.ScopeRelease, c.release))
	m.HandleFunc("POST /console/messages/{id}/revoke", c.action(config.ScopeRelease, c.links(false)))
	m.HandleFunc("POST /console/messages/{id}/enable", c.action(config.ScopeRelease, c.links(true)))
	m.HandleFunc("GET /console/lanes", c.page(c.lanes))
	m.HandleFunc("POST /console/lanes/{name}/pause", c.action(config.ScopeAdmin, c.lanePause(false)))
	m.HandleFunc("POST /console/lanes/{name}/resume", c.action(config.ScopeAdmin, c.lanePause(true)))
	m.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		s, _ := c.current(w, r)
		c.render(w, r, http.StatusNotFound, "empty", view{Error: "nothing_here"}, s)
	})
	// Beside the form keys, the browser's own word: a POST from another
	// site is refused before it reaches a handler.
	mux.Handle("/console/", http.NewCrossOriginProtection().Handler(m))
}

// view is what a page shows; Title, Notice and Error are text keys (or,
// with Args, formats); RawTitle is a title shown as it is.
type view struct {
	Title, RawTitle string
	Notice, Error   string
	Args            []any
	Body            any
}

// whoView is the signed-in token, as the header shows it.
type whoView struct {
	Name, Scopes, Tenants string
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page string, v view, s *session) {
	lang := pickLanguage(r)
	L := texts[lang]
	say := func(key string) string {
		if key == "" {
			return ""
		}
		if len(v.Args) > 0 {
			return fmt.Sprintf(L[key], v.Args...)
		}
		return L[key]
	}
	data := struct {
		Lang, Title, Notice, Error, CSRF string
		L                                map[string]string
		Who                              *whoView
		Body                             any
	}{Lang: lang, Title: L[v.Title], Notice: say(v.Notice), Error: say(v.Error), L: L, Body: v.Body}
	if v.RawTitle != "" {
		data.Title = v.RawTitle
	}
	if data.Title == "" {
		data.Title = L["title_signin"]
	}
	if s != nil {
		data.CSRF = s.csrf
		data.Who = &whoView{Name: s.who.Name, Tenants: L["tenants_all"]}
		var scopes []string
		for _, sc := range s.who.Scopes {
			scopes = append(scopes, string(sc))
		}
		data.Who.Scopes = strings.Join(scopes, ", ")
		if names, _ := s.who.Tenants.Narrow(nil); !s.who.Tenants.Every() {
			data.Who.Tenants = strings.Join(names, ", ")
		}
	}
	h := w.Header()
	quarantine.SetPageHeaders(h, lang, "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Add("Vary", "Cookie")
	w.WriteHeader(status)
	if err := pages[page].ExecuteTemplate(w, "layout", data); err != nil {
		c.o.Log.Error("console: rendering page", "page", page, "err", err)
	}
}

// current is the request's live session; when its store renews the
// cookie (a sealed session's new seen time), the reply carries it, to
// live as long as the session may.
func (c *Console) current(w http.ResponseWriter, r *http.Request) (*session, bool) {
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return nil, false
	}
	s, renewed, ok := c.sessions.get(ck.Value)
	if !ok {
		return nil, false
	}
	if renewed != "" {
		left := c.o.MaxAge - c.o.Clock.Now().Sub(s.created)
		http.SetCookie(w, c.cookie(r, renewed, max(int(left/time.Second), 1)))
	}
	return &s, true
}

// cookie is the session cookie with value; maxAge -1 deletes it.
func (c *Console) cookie(r *http.Request, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: cookieName, Value: value, Path: "/console/", MaxAge: maxAge, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil || c.o.SecureCookie}
}

// home is the search page, or the sign-in page without a session.
func (c *Console) home(w http.ResponseWriter, r *http.Request) {
	s, ok := c.current(w, r)
	if !ok {
		notice := ""
		if r.URL.Query().Get("signed_out") == "1" {
			notice = "signed_out"
		}
		c.render(w, r, http.StatusOK, "signin", view{Notice: notice}, nil)
		return
	}
	c.search(w, r, s)
}

// page guards a GET: the sign-in page (401) without a live session.
func (c *Console) page(h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, ok := c.current(w, r)
		if !ok {
			c.render(w, r, http.StatusUnauthorized, "signin", view{Error: "session_ended"}, nil)
			return
		}
		h(w, r, s)
	}
}

// action guards a POST: a bounded form, a live session, the session's
// form key, and scope (none for signing out).
func (c *Console) action(scope config.Scope, h func(http.ResponseWriter, *http.Request, *session)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		s, ok := c.current(w, r)
		if !ok {
			c.render(w, r, http.StatusUnauthorized, "signin", view{Error: "session_ended"}, nil)
			return
		}
		if err := r.ParseForm(); err != nil {
			c.render(w, r, http.StatusBadRequest, "empty", view{Error: "bad_form"}, s)
			return
		}
		if !s.checkCSRF(r.PostFormValue("csrf")) {
			c.render(w, r, http.StatusForbidden, "empty", view{Error: "form_expired"}, s)
			return
		}
		if scope != "" && !s.who.Has(scope) {
			c.render(w, r, http.StatusForbidden, "empty", view{Error: "forbidden"}, s)
			return
		}
		h(w, r, s)
	}
}

// signIn trades a valid API token for a session. Failures are limited
// per client; the token is never logged, and neither is the session id.
func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	now := c.o.Clock.Now()
	if wait := c.failures.Wait(r.RemoteAddr, now); wait > 0 {
		secs := int((wait + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		c.render(w, r, http.StatusTooManyRequests, "signin", view{Error: "signin_limited", Args: []any{secs}}, nil)
		return
	}
	if err := r.ParseForm(); err != nil {
		c.render(w, r, http.StatusBadRequest, "signin", view{Error: "bad_form"}, nil)
		return
	}
	who, ok := c.o.Tokens.Lookup(strings.TrimSpace(r.PostFormValue("token")))
	if !ok {
		c.failures.Spend(r.RemoteAddr, now)
		c.o.Log.Warn("console: sign-in refused", "client", r.RemoteAddr)
		c.render(w, r, http.StatusUnauthorized, "signin", view{Error: "signin_failed"}, nil)
		return
	}
	// A session cookie the browser already had is replaced, and its
	// session ended: a sign-in never continues an earlier session.
	if ck, err := r.Cookie(cookieName); err == nil {
		c.sessions.end(ck.Value)
	}
	id, _ := c.sessions.start(who)
	c.o.Log.Info("console: signed in", "token", who.Name, "client", r.RemoteAddr)
	http.SetCookie(w, c.cookie(r, id, int(c.o.MaxAge/time.Second)))
	http.Redirect(w, r, "/console/", http.StatusSeeOther)
}

func (c *Console) signOut(w http.ResponseWriter, r *http.Request, s *session) {
	if ck, err := r.Cookie(cookieName); err == nil {
		c.sessions.end(ck.Value)
	}
	c.o.Log.Info("console: signed out", "token", s.who.Name, "client", r.RemoteAddr)
	http.SetCookie(w, c.cookie(r, "", -1))
	http.Redirect(w, r, "/console/?signed_out=1", http.StatusSeeOther)
}

// option is one choice of a select.
type option struct {
	Value, Label string
	Selected     bool
}

func options(L map[string]string, chosen string, prefix string, values ...string) []option {
	var out []option
	for _, v := range values {
		key := prefix + v
		if v == "" {
			key = prefix + "any"
			if prefix == "in_" {
				key = "in_auto"
			}
		}
		out = append(out, option{Value: v, Label: L[key], Selected: v == chosen})
	}
	return out
}

type searchView struct {
	Form       searchForm
	In, States []option
	Ran        bool
	Results    []store.Message
	Next       string
}

// search finds mail by the form's text and filters, in the session's
// tenants, with the API's store queries.
func (c *Console) search(w http.ResponseWriter, r *http.Request, s *session) {
	L := texts[pickLanguage(r)]
	q := r.URL.Query()
	f, cands, bad := parseSearch(q)
	v := searchView{Form: f, Ran: len(q) > 0 && bad == ""}
	v.In = options(L, f.In, "in_", inAuto, inRecipient, inSubject, inMessageID)
	v.States = options(L, f.State, "state_", "", string(store.StateHeld), string(store.StateQueued), string(store.StateDelivered), string(store.StateBounced))
	status := http.StatusOK
	if bad != "" {
		status = http.StatusBadRequest
	}
	if v.Ran {
		for _, cand := range cands {
			msgs, err := quarantine.Search(r.Context(), c.o.Store, cand.query, s.who.Tenants)
			if err != nil {
				c.internal(w, r, s, "searching", err)
				return
			}
			if len(msgs) == 0 {
				continue
			}
			v.Results = msgs
			if len(msgs) == cand.query.Limit {
				next := url.Values{}
				for k, vs := range q {
					next[k] = vs
				}
				next.Set("after", msgs[len(msgs)-1].ID)
				if cand.kind != inAuto && cand.kind != "id" {
					next.Set("in", cand.kind)
				}
				v.Next = "/console/?" + next.Encode()
			}
			break
		}
	}
	c.render(w, r, status, "search", view{Title: "nav_search", Error: bad, Body: v}, s)
}

func (c *Console) internal(w http.ResponseWriter, r *http.Request, s *session, what string, err error) {
	c.o.Log.Error("console: "+what, "err", err)
	c.render(w, r, http.StatusInternalServerError, "empty", view{Error: "internal"}, s)
}

// actor is the audit trail's "console:<token>@<client address>".
func actor(r *http.Request, s *session, scope config.Scope) quarantine.Actor {
	return quarantine.Actor{Name: "console:" + s.who.Name + "@" + r.RemoteAddr, Scope: s.who.Used(scope)}
}

// reason is the form's reason, which every change requires.
func (c *Console) reason(w http.ResponseWriter, r *http.Request, s *session) (string, bool) {
	reason := strings.Join(strings.Fields(r.PostFormValue("reason")), " ")
	if reason == "" {
		c.render(w, r, http.StatusBadRequest, "empty", view{Error: "reason_required"}, s)
		return "", false
	}
	return reason, true
}

// done sends the browser back to path with a notice of what was done:
// a fixed local path, never one the client named.
func done(w http.ResponseWriter, r *http.Request, path, what string, n int) {
	http.Redirect(w, r, path+"?done="+what+"&n="+strconv.Itoa(n), http.StatusSeeOther)
}

// doneNotice reads done's notice back: only the known ones.
func doneNotice(q url.Values) (string, []any) {
	what := q.Get("done")
	switch what {
	case "released", "revoked", "enabled", "paused", "resumed":
	default:
		return "", nil
	}
	n, err := strconv.Atoi(q.Get("n"))
	if err != nil || n < 0 || n > 1_000_000 {
		n = 0
	}
	return "done_" + what, []any{n}
}

func (c *Console) release(w http.ResponseWriter, r *http.Request, s *session) {
	reason, ok := c.reason(w, r, s)
	if !ok {
		return
	}
	id := r.PathValue("id")
	pend, err := c.o.Desk.Release(r.Context(), id, s.who.Tenants, actor(r, s, config.ScopeRelease), reason)
	if errors.Is(err, store.ErrNotFound) {
		c.render(w, r, http.StatusNotFound, "empty", view{Error: "not_found"}, s)
		return
	}
	if err != nil {
		c.internal(w, r, s, "releasing", err)
		return
	}
	done(w, r, "/console/messages/"+url.PathEscape(id), "released", len(pend))
}

// links revokes, or with enable re-enables, one recipient's links.
func (c *Console) links(enable bool) func(http.ResponseWriter, *http.Request, *session) {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		reason, ok := c.reason(w, r, s)
		if !ok {
			return
		}
		id, rcpt := r.PathValue("id"), r.PostFormValue("recipient")
		change, what := c.o.Desk.Revoke, "revoked"
		if enable {
			change, what = c.o.Desk.Enable, "enabled"
		}
		n, err := change(r.Context(), id, rcpt, s.who.Tenants, actor(r, s, config.ScopeRelease), reason)
		switch {
		case errors.Is(err, store.ErrNotFound), errors.Is(err, quarantine.ErrNoRecipient):
			c.render(w, r, http.StatusNotFound, "empty", view{Error: "not_found"}, s)
		case err != nil:
			c.internal(w, r, s, "changing links", err)
		default:
			done(w, r, "/console/messages/"+url.PathEscape(id), what, n)
		}
	}
}

type rcptRow struct {
	store.Recipient
	StateText, Next, Held string
	Placement             *store.Placement
}

type linkRow struct {
	store.Link
	Recipient, Origin    string
	CanRevoke, CanEnable bool
}

type eventRow struct {
	store.Event
	Recipient string
}

type messageView struct {
	M          store.Message
	CanRelease bool
	Recipients []rcptRow
	Attempts   []eventRow
	Links      []linkRow
	Events     []eventRow
	Older      string
}

// attemptKinds are the events of delivery attempts, whose detail is the
// receiver's reply.
var attemptKinds = []string{"deferred", "delivered", "bounced"}

// message shows one message of the session's tenants; another tenant's
// is not found, as an unknown one.
func (c *Console) message(w http.ResponseWriter, r *http.Request, s *session) {
	L := texts[pickLanguage(r)]
	id := r.PathValue("id")
	page := store.EventPage{Limit: store.DefaultEventPage}
	if b, err := strconv.ParseInt(r.URL.Query().Get("events_after"), 10, 64); err == nil && b > 0 {
		page.Before = b
	}
	mv, err := quarantine.MessagePage(r.Context(), c.o.Store, id, page, s.who.Tenants)
	if errors.Is(err, store.ErrNotFound) {
		c.render(w, r, http.StatusNotFound, "empty", view{Error: "not_found"}, s)
		return
	}
	if err != nil {
		c.internal(w, r, s, "reading a message", err)
		return
	}
	canChange := s.who.Has(config.ScopeRelease)
	v := messageView{M: mv.Message, CanRelease: canChange}
	byID := map[int64]string{}
	byTracking := map[string]int{}
	for _, rc := range mv.Recipients {
		byID[rc.ID] = rc.Address
		row := rcptRow{Recipient: rc, StateText: L["state_"+string(rc.State)]}
		if row.StateText == "" {
			row.StateText = string(rc.State)
		}
		if rc.State == store.StateQueued {
			row.Next = when(rc.NextAttempt)
			row.Held = c.hold(rc.ID, s)
		}
		byTracking[rc.TrackingID] = len(v.Recipients)
		v.Recipients = append(v.Recipients, row)
	}
	if err := c.addPlacements(r.Context(), &v, byTracking); err != nil {
		c.internal(w, r, s, "reading placements", err)
		return
	}
	for _, l := range mv.Links {
		v.Links = append(v.Links, linkRow{Link: l, Recipient: byID[l.RecipientID], Origin: api.URLOrigin(l.URL),
			CanRevoke: canChange && l.State != store.LinkRevoked, CanEnable: canChange && l.State == store.LinkRevoked})
	}
	for _, e := range mv.Events {
		e.Count = max(e.Count, 1)
		row := eventRow{Event: e, Recipient: byID[e.RecipientID]}
		v.Events = append(v.Events, row)
		if slices.Contains(attemptKinds, e.Kind) {
			v.Attempts = append(v.Attempts, row)
		}
	}
	if mv.OlderEvents != 0 {
		v.Older = "/console/messages/" + url.PathEscape(id) + "?events_after=" + strconv.FormatInt(mv.OlderEvents, 10)
	}
	notice, args := doneNotice(r.URL.Query())
	c.render(w, r, http.StatusOK, "message", view{Title: "message", RawTitle: mv.Message.Subject, Notice: notice, Args: args, Body: v}, s)
}

// hold says which lane keeps a queued copy that is due, and why: the
// reason only for a session of every tenant, or when it is the tenant's
// own warm-up (the API's rule).
func (c *Console) hold(recipientID int64, s *session) string {
	if c.o.Lanes == nil {
		return ""
	}
	h, ok := c.o.Lanes.Hold(recipientID)
	if !ok {
		return ""
	}
	out := h.Lane + " (" + h.By
	if !h.Until.IsZero() {
		out += ", " + when(h.Until)
	}
	if h.Reason != "" && (s.who.Tenants.Every() || h.By == "tenant_warmup") {
		out += ": " + h.Reason
	}
	return out + ")"
}

// addPlacements puts each seed copy's placement on its recipient; the
// message is the session's already.
func (c *Console) addPlacements(ctx context.Context, v *messageView, byTracking map[string]int) error {
	if c.o.Placements == nil {
		return nil
	}
	if !slices.ContainsFunc(v.Recipients, func(r rcptRow) bool { return r.Seed != "" }) {
		return nil
	}
	found, err := c.o.Placements.Placements(ctx, store.PlacementQuery{MessageID: v.M.ID, Limit: 500})
	if err != nil {
		return err
	}
	for _, p := range found {
		if i, ok := byTracking[p.TrackingID]; ok {
			v.Recipients[i].Placement = &p
		}
	}
	return nil
}

type laneRow struct {
	api.Lane
	RateText, ConfiguredText string
	Due                      int
	Paused                   bool
}

type lanesView struct {
	CanChange, Reasons bool
	Lanes              []laneRow
}

// canChangeLanes: a lane carries every tenant's mail, so only an admin
// of every tenant may stop one (the API's rule).
func canChangeLanes(s *session) bool {
	return s.who.Has(config.ScopeAdmin) && s.who.Tenants.Every()
}

func (c *Console) lanes(w http.ResponseWriter, r *http.Request, s *session) {
	if c.o.Lanes == nil {
		c.render(w, r, http.StatusOK, "empty", view{Title: "lanes", Notice: "no_lane_control"}, s)
		return
	}
	L := texts[pickLanguage(r)]
	rate := func(perSecond float64) string {
		if math.IsInf(perSecond, 0) || math.IsNaN(perSecond) {
			return L["unlimited"]
		}
		return strconv.FormatFloat(perSecond*60, 'f', -1, 64) + L["per_min"]
	}
	v := lanesView{CanChange: canChangeLanes(s), Reasons: s.who.Tenants.Every()}
	for _, l := range c.o.Lanes.Lanes() {
		l, ok := l.SeenBy(s.who.Tenants)
		if !ok {
			continue
		}
		row := laneRow{Lane: l, RateText: rate(l.Rate), ConfiguredText: rate(l.Configured), Paused: l.State == "paused"}
		for _, byTenant := range l.Ready {
			for _, n := range byTenant {
				row.Due += n
			}
		}
		v.Lanes = append(v.Lanes, row)
	}
	notice, args := doneNotice(r.URL.Query())
	c.render(w, r, http.StatusOK, "lanes", view{Title: "lanes", Notice: notice, Args: args, Body: v}, s)
}

func (c *Console) lanePause(resume bool) func(http.ResponseWriter, *http.Request, *session) {
	return func(w http.ResponseWriter, r *http.Request, s *session) {
		if c.o.Lanes == nil || !canChangeLanes(s) {
			c.render(w, r, http.StatusForbidden, "empty", view{Error: "forbidden"}, s)
			return
		}
		reason, ok := c.reason(w, r, s)
		if !ok {
			return
		}
		change, what := c.o.Lanes.Pause, "paused"
		if resume {
			change, what = c.o.Lanes.Resume, "resumed"
		}
		err := change(r.PathValue("name"), reason, actor(r, s, config.ScopeAdmin).Name)
		switch {
		case errors.Is(err, api.ErrNoLane):
			c.render(w, r, http.StatusNotFound, "empty", view{Error: "no_lane"}, s)
		case err != nil:
			c.internal(w, r, s, "changing a lane", err)
		default:
			done(w, r, "/console/lanes", what, 1)
		}
	}
}
