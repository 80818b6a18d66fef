package quarantine

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/certgate/certgate/clock"
	"github.com/certgate/certgate/metrics"
	"github.com/certgate/certgate/store"
)

// TenantPage is what the gate says about an issuer: its name and how its
// customers reach support.
type TenantPage struct {
	DisplayName  string
	SupportEmail string
	SupportPhone string
	SupportURL   string
}

// GateOptions configures the gate.
type GateOptions struct {
	Tenants map[string]TenantPage
	// ScannerAgents are extra user-agent substrings (case-insensitive) of
	// link scanners; ScannerNets their address ranges.
	ScannerAgents []string
	ScannerNets   []netip.Prefix
	// MinHumanDelay is the least time between showing the page and its
	// button being pressed: scanners that submit forms do it at once.
	// Zero sets no minimum (config fills in the default).
	MinHumanDelay time.Duration
	// Key signs the page's form; nil makes one for this process (a page
	// opened before a restart then asks for one more press).
	Key []byte
	// Clock times the form and the limits below. Default clock.Real.
	Clock clock.Clock
	// PerLink and PerClient limit presses of the button (POSTs) per link
	// and per client address (an IPv6 client by its /64): over either,
	// the gate answers 429 with Retry-After before it reads the store.
	// Zero values take DefaultPerLink and DefaultPerClient; LimiterKeys
	// (default DefaultLimiterKeys) bounds how many of each they remember.
	PerLink, PerClient RateLimit
	LimiterKeys        int
}

// builtinScannerAgents are user-agent marks of link scanners, preview
// fetchers, and the HTTP libraries and command-line tools scripts use (no
// person presses a button with those). Scanners that pose as a desktop
// browser are caught by the form's timing and by the use budget instead.
var builtinScannerAgents = []string{
	// scanners and previews
	"bingpreview", "mimecast", "proofpoint", "barracuda", "safelinks", "urldefense", "cisco", "fortiguard",
	"headlesschrome", "phantomjs", "facebookexternalhit", "slackbot", "whatsapp", "skypeuripreview",
	"bot/", "bot.htm", "crawler", "spider", "scanner",
	// HTTP libraries and tools
	"python-requests", "python-urllib", "python-httpx", "python/", "aiohttp", "scrapy", "mechanize",
	"go-http-client", "go-resty", "curl/", "libcurl", "wget/", "httpie/", "libwww", "http.rb", "ruby", "faraday",
	"java/", "apache-httpclient", "httpclient", "okhttp", "axios/", "node-fetch", "undici", "got (",
	"guzzlehttp", "reqwest", "dart:io", "powershell", "winhttp", "postmanruntime", "insomnia",
}

// tokenLen is the length of the tokens NewToken makes (16 bytes, base64).
const tokenLen = 22

// GateStore is what the gate needs of the store.
type GateStore interface {
	LinkByToken(ctx context.Context, hash [32]byte) (*store.Link, error)
	UseLink(ctx context.Context, id int64, now time.Time, actor, detail string) (store.LinkUse, error)
	RefuseLink(ctx context.Context, id int64, r store.LinkRefusal, actor string) (bool, error)
}

// Gate serves /d/{token}: a page that explains and, once the link is
// enabled, a button whose POST spends one use and forwards to the issuer.
type Gate struct {
	store   GateStore
	opts    GateOptions
	agents  []string
	limits  postLimits
	metrics *metrics.Metrics
	log     *slog.Logger
}

// NewGate builds the gate.
func NewGate(st GateStore, opts GateOptions, m *metrics.Metrics, log *slog.Logger) *Gate {
	if opts.Key == nil {
		opts.Key = make([]byte, 32)
		rand.Read(opts.Key)
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real
	}
	for _, l := range []struct {
		lim *RateLimit
		def RateLimit
	}{{&opts.PerLink, DefaultPerLink}, {&opts.PerClient, DefaultPerClient}} {
		if l.lim.Burst <= 0 || l.lim.Every <= 0 {
			*l.lim = l.def
		}
	}
	if opts.LimiterKeys <= 0 {
		opts.LimiterKeys = DefaultLimiterKeys
	}
	agents := append([]string(nil), builtinScannerAgents...)
	for _, a := range opts.ScannerAgents {
		agents = append(agents, strings.ToLower(a))
	}
	return &Gate{store: st, opts: opts, agents: agents, metrics: m, log: log, limits: postLimits{
		link:   newKeyLimiter[[32]byte](opts.PerLink, opts.LimiterKeys),
		client: newKeyLimiter[netip.Prefix](opts.PerClient, opts.LimiterKeys),
	}}
}

// Register adds the gate's routes to mux.
func (g *Gate) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /d/{token}", g.show) // GET also serves HEAD
	mux.HandleFunc("POST /d/{token}", g.use)
}

// show renders the link's page. It never changes the link: scanners fetch
// every link with GET and HEAD, before and after delivery.
func (g *Gate) show(w http.ResponseWriter, r *http.Request) {
	link, ok := g.lookup(w, r)
	if !ok {
		return
	}
	view := g.view(link)
	g.metrics.GateViews.WithLabelValues(view).Inc()
	g.render(w, r, http.StatusOK, view, link)
}

// use spends one use of the link and forwards to the issuer's URL. Every
// press is limited before the store is read; a refused one is counted on
// the link (store RefuseLink), which writes an audit event only now and
// then.
func (g *Gate) use(w http.ResponseWriter, r *http.Request) {
	if !g.allow(w, r) {
		return
	}
	link, ok := g.lookup(w, r)
	if !ok {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10) // the form is one short field
	who := g.describe(r)
	if reason := g.refuse(r, link); reason != "" {
		g.metrics.GateRefusals.WithLabelValues(reason).Inc()
		g.countRefusal(r, link, reason, who)
		view := g.view(link)
		if view == string(store.LinkEnabled) {
			view = "tooquick"
		}
		g.render(w, r, http.StatusOK, view, link)
		return
	}
	res, err := g.store.UseLink(r.Context(), link.ID, g.opts.Clock.Now(), who, "download")
	if err != nil {
		g.log.Error("gate: using link", "message", link.MessageID, "err", err)
		http.Error(w, "temporary problem, please try again", http.StatusServiceUnavailable)
		return
	}
	if !res.OK {
		g.metrics.GateRefusals.WithLabelValues(res.Why).Inc()
		g.countRefusal(r, &res.Link, res.Why, who)
		g.render(w, r, http.StatusOK, string(res.Link.State), &res.Link)
		return
	}
	g.metrics.GateUses.Inc()
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	http.Redirect(w, r, res.Link.URL, http.StatusSeeOther)
}

// allow applies the limits on presses. Over one, it answers 429 itself,
// with no page: a flood should cost as little as it can.
func (g *Gate) allow(w http.ResponseWriter, r *http.Request) bool {
	token := r.PathValue("token")
	var hash [32]byte
	hasLink := len(token) == tokenLen
	if hasLink {
		hash = HashToken(token)
	}
	wait, ok := g.limits.allow(hash, hasLink, clientKey(r.RemoteAddr), g.opts.Clock.Now())
	if ok {
		return true
	}
	g.metrics.GateRefusals.WithLabelValues("rate_limited").Inc()
	secs := int((wait + time.Second - 1) / time.Second)
	h := w.Header()
	h.Set("Retry-After", strconv.Itoa(secs))
	h.Set("Cache-Control", "no-store")
	http.Error(w, fmt.Sprintf("Too many tries. Wait %d seconds, then press the button again.", secs), http.StatusTooManyRequests)
	return false
}

// countRefusal counts a refused press on the link. A failure is logged
// only: the person gets their page whether it was counted or not.
func (g *Gate) countRefusal(r *http.Request, link *store.Link, reason, who string) {
	client := r.RemoteAddr
	if ap, err := netip.ParseAddrPort(client); err == nil {
		client = ap.Addr().Unmap().String()
	}
	ref := store.LinkRefusal{Time: g.opts.Clock.Now(), Reason: reason, Client: client, UserAgent: r.UserAgent()}
	if _, err := g.store.RefuseLink(r.Context(), link.ID, ref, who); err != nil {
		g.log.Warn("gate: counting a refused press", "message", link.MessageID, "reason", reason, "err", err)
	}
}

func (g *Gate) lookup(w http.ResponseWriter, r *http.Request) (*store.Link, bool) {
	token := r.PathValue("token")
	var link *store.Link
	var err error
	if len(token) == tokenLen { // the shape NewToken makes; anything else cannot match
		link, err = g.store.LinkByToken(r.Context(), HashToken(token))
	} else {
		err = store.ErrNotFound
	}
	if errors.Is(err, store.ErrNotFound) {
		g.metrics.GateViews.WithLabelValues("invalid").Inc()
		g.render(w, r, http.StatusNotFound, "invalid", nil)
		return nil, false
	}
	if err != nil {
		g.log.Error("gate: looking up link", "err", err)
		http.Error(w, "temporary problem, please try again", http.StatusServiceUnavailable)
		return nil, false
	}
	return link, true
}

// refuse says why a POST is not counted: a known scanner, or a form that
// was not shown by this gate to someone who then took the time a person
// takes to press a button.
func (g *Gate) refuse(r *http.Request, link *store.Link) string {
	// Checked whatever the state read here: the link may be enabled (on
	// delivery, on release) before UseLink runs. A page without a button
	// has no form, so its POSTs stop here too.
	if g.isScanner(r) {
		return "scanner"
	}
	issued, ok := g.checkNonce(r.PostFormValue("n"), r.PathValue("token"))
	if !ok {
		return "no_form"
	}
	age := g.opts.Clock.Now().Sub(issued)
	if age < g.opts.MinHumanDelay {
		return "too_fast"
	}
	if age > time.Hour {
		return "stale_form"
	}
	return ""
}

// view is the page a link gets: its state, or expired once past its time.
func (g *Gate) view(link *store.Link) string {
	if (link.State == store.LinkEnabled || link.State == store.LinkPending) && !link.ExpiresAt.IsZero() && !g.opts.Clock.Now().Before(link.ExpiresAt) {
		return string(store.LinkExpired)
	}
	return string(link.State)
}

func (g *Gate) isScanner(r *http.Request) bool {
	ua := strings.ToLower(r.UserAgent())
	if ua == "" {
		return true
	}
	for _, a := range g.agents {
		if strings.Contains(ua, a) {
			return true
		}
	}
	if ip, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		for _, p := range g.opts.ScannerNets {
			if p.Contains(ip.Addr().Unmap()) {
				return true
			}
		}
	}
	return false
}

// nonce signs the time the page was shown, bound to the token.
func (g *Gate) nonce(token string) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(g.opts.Clock.Now().UnixMilli()))
	mac := hmac.New(sha256.New, g.opts.Key)
	mac.Write(b[:])
	mac.Write([]byte(token))
	return base64.RawURLEncoding.EncodeToString(append(b[:], mac.Sum(nil)[:16]...))
}

func (g *Gate) checkNonce(n, token string) (time.Time, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(n)
	if err != nil || len(raw) != 24 {
		return time.Time{}, false
	}
	mac := hmac.New(sha256.New, g.opts.Key)
	mac.Write(raw[:8])
	mac.Write([]byte(token))
	if !hmac.Equal(mac.Sum(nil)[:16], raw[8:]) {
		return time.Time{}, false
	}
	return time.UnixMilli(int64(binary.BigEndian.Uint64(raw[:8]))), true
}

func (g *Gate) describe(r *http.Request) string {
	kind := "browser"
	if g.isScanner(r) {
		kind = "scanner"
	}
	ua := r.UserAgent()
	if len(ua) > 120 {
		ua = ua[:120]
	}
	return fmt.Sprintf("%s:%s (%q)", kind, r.RemoteAddr, ua)
}

// contact is a support contact; Href is built here from configuration
// checked at load (a plain address, digits of a phone number, an http(s)
// URL), so the template may trust it.
type contact struct {
	Text string
	Href template.URL
}

func phoneHref(phone string) template.URL {
	var b strings.Builder
	for i, r := range phone {
		if r >= '0' && r <= '9' || (r == '+' && i == 0) {
			b.WriteRune(r)
		}
	}
	return template.URL("tel:" + b.String())
}

// SetPageHeaders sets the headers of a page a person reads (the gate's,
// the console's): HTML in lang, never cached, indexed or sniffed, no
// referrer, under the content security policy csp.
func SetPageHeaders(h http.Header, lang, csp string) {
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Robots-Tag", "noindex, nofollow")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", csp)
	h.Set("Content-Language", lang)
	h.Set("Vary", "Accept-Language")
}

func (g *Gate) render(w http.ResponseWriter, r *http.Request, status int, view string, link *store.Link) {
	lang := pickLanguage(r.Header.Get("Accept-Language"))
	p, ok := texts[lang][view]
	if !ok {
		p = texts[lang]["invalid"]
	}
	data := struct {
		page
		Issuer, Action, Nonce string
		Contacts              []contact
	}{page: p, Action: r.URL.Path}
	data.Lang = lang
	data.Support = texts[lang]["support"].Support
	if link != nil {
		t := g.opts.Tenants[link.Tenant]
		data.Issuer = t.DisplayName
		if t.SupportEmail != "" {
			data.Contacts = append(data.Contacts, contact{t.SupportEmail, template.URL("mailto:" + url.PathEscape(t.SupportEmail))})
		}
		if t.SupportPhone != "" {
			data.Contacts = append(data.Contacts, contact{t.SupportPhone, phoneHref(t.SupportPhone)})
		}
		if u, err := url.Parse(t.SupportURL); err == nil && (u.Scheme == "https" || u.Scheme == "http") {
			data.Contacts = append(data.Contacts, contact{t.SupportURL, template.URL(u.String())})
		}
	}
	if p.Button != "" {
		data.Nonce = g.nonce(r.PathValue("token"))
	}
	// No form-action: browsers apply it to every hop of the redirect that
	// follows the POST, and an issuer's download often redirects again (a
	// CDN, http to https); the use would be spent and the download never
	// reached. The page has no injected content for it to guard.
	SetPageHeaders(w.Header(), lang, "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'")
	w.WriteHeader(status)
	if r.Method == http.MethodHead {
		return
	}
	if err := gateTemplate.Execute(w, data); err != nil {
		g.log.Error("gate: rendering page", "err", err)
	}
}
