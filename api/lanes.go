package api

import (
	"errors"
	"math"
	"net/http"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/quarantine"
	"github.com/certgate/certgate/store"
)

// Lane is one delivery lane as operators see it.
type Lane struct {
	Name     string // the provider's name, or default:<domain> for a catch-all lane
	Provider string
	State    string  // normal, slowed, suspended, paused
	Rate     float64 // messages per second now; +Inf unlimited
	// Configured is the configured rate, in messages per second.
	Configured float64
	// Ready counts the messages due now, by class and tenant.
	Ready        map[config.Class]map[string]int
	Reason       string
	Since, Until time.Time
	WarmupLeft   int // warming: bulk messages the lane may still send today
	// TenantWarmups are the tenants whose own warm-up holds the lane
	// today, with what each may still send on it.
	TenantWarmups map[string]TenantWarmup
}

// TenantWarmup is where a tenant's own warm-up stands on a lane.
type TenantWarmup struct {
	Day   int // 1 the first
	Left  int
	Until time.Time // when the day ends
}

type apiTenantWarmup struct {
	Day   int       `json:"day"`
	Left  int       `json:"left"`
	Until time.Time `json:"until"`
}

// ErrNoLane is a lane name no lane has.
var ErrNoLane = errors.New("no such lane")

// LaneControl is what the lanes routes read and change; the daemon
// implements it over its policy and queue.
type LaneControl interface {
	Lanes() []Lane
	Pause(name, reason, actor string) error
	Resume(name, reason, actor string) error
	// SetRate overrides a lane's rate until until; a zero rate ends it.
	SetRate(name string, perSecond float64, until time.Time, reason, actor string) error
	// Hold says what keeps a queued recipient that is due now in its
	// lane; false when nothing does.
	Hold(recipientID int64) (Hold, bool)
}

// Hold is what keeps a recipient's copy in its lane.
type Hold struct {
	Lane   string    // as Lane.Name
	By     string    // paused, suspended, warmup, tenant_warmup
	Until  time.Time // zero: until an operator resumes the lane
	Reason string
}

type apiHold struct {
	Lane string `json:"lane"`
	By   string `json:"by"`
	// Until is when the copy is expected to leave; null: when an
	// operator resumes the lane.
	Until  *time.Time `json:"until"`
	Reason string     `json:"reason,omitempty"`
}

// addHolds tells, for each queued copy of the message, what holds it in
// its lane. The reason only goes to a caller of every tenant: a lane's
// reason may name another tenant's trouble, but a tenant's own warm-up
// is its own.
func (a *API) addHolds(r *http.Request, v *store.MessageView, out *apiMessage) {
	if a.laneControl == nil {
		return
	}
	every := tenants(r).Every()
	for i, rc := range v.Recipients {
		if rc.State != store.StateQueued {
			continue
		}
		h, ok := a.laneControl.Hold(rc.ID)
		if !ok {
			continue
		}
		ah := &apiHold{Lane: h.Lane, By: h.By, Until: optTime(h.Until)}
		if every || h.By == "tenant_warmup" {
			ah.Reason = h.Reason
		}
		out.Recipients[i].Held = ah
	}
}

type apiLane struct {
	Name       string                    `json:"name"`
	Provider   string                    `json:"provider"`
	State      string                    `json:"state"`
	Rate       *float64                  `json:"rate_per_second"` // null: unlimited
	Configured *float64                  `json:"configured_per_second"`
	Queue      map[string]map[string]int `json:"queue"` // class -> tenant -> messages due now
	Reason     string                    `json:"reason,omitempty"`
	Since      *time.Time                `json:"since,omitempty"`
	Until      *time.Time                `json:"until,omitempty"`
	WarmupLeft *int                      `json:"warmup_left,omitempty"`
	// TenantWarmups: the caller's tenants whose own warm-up holds the lane.
	TenantWarmups map[string]apiTenantWarmup `json:"tenant_warmups,omitempty"`
}

func finite(f float64) *float64 {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return nil
	}
	return &f
}

// lanes: GET /api/v1/lanes. The queue counts keep to the caller's tenants.
func (a *API) lanes(w http.ResponseWriter, r *http.Request) {
	in := tenants(r)
	out := struct {
		Lanes []apiLane `json:"lanes"`
	}{Lanes: []apiLane{}}
	for _, l := range a.laneControl.Lanes() {
		if _, ok := l.SeenBy(in); ok {
			out.Lanes = append(out.Lanes, laneJSON(l, in))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// SeenBy is the lane as a caller of in's tenants may see it: the queue
// counts and warm-ups of those tenants only, and the reason only for a
// caller of every tenant (it may name another tenant's trouble). False
// when the caller may not see the lane at all: a catch-all lane is named
// after a recipient domain, and another tenant's customers are not the
// caller's to see.
func (l Lane) SeenBy(in quarantine.Tenants) (Lane, bool) {
	every := in.Every()
	out := l
	out.Ready, out.TenantWarmups = map[config.Class]map[string]int{}, nil
	if !every {
		out.Reason = ""
	}
	for tenant, tw := range l.TenantWarmups {
		if in.Has(tenant) {
			if out.TenantWarmups == nil {
				out.TenantWarmups = map[string]TenantWarmup{}
			}
			out.TenantWarmups[tenant] = tw
		}
	}
	for class, byTenant := range l.Ready {
		for tenant, n := range byTenant {
			if in.Has(tenant) {
				if out.Ready[class] == nil {
					out.Ready[class] = map[string]int{}
				}
				out.Ready[class][tenant] = n
			}
		}
	}
	mine := len(out.Ready) > 0
	return out, every || l.Provider != config.CatchAllProvider || mine
}

// laneJSON is a lane as the caller in may see it (SeenBy).
func laneJSON(l Lane, in quarantine.Tenants) apiLane {
	l, _ = l.SeenBy(in)
	al := apiLane{Name: l.Name, Provider: l.Provider, State: l.State, Rate: finite(l.Rate), Configured: finite(l.Configured),
		Queue: map[string]map[string]int{}, Since: optTime(l.Since), Until: optTime(l.Until), Reason: l.Reason}
	if l.State == "warming" {
		left := l.WarmupLeft
		al.WarmupLeft = &left
	}
	for tenant, tw := range l.TenantWarmups {
		if al.TenantWarmups == nil {
			al.TenantWarmups = map[string]apiTenantWarmup{}
		}
		al.TenantWarmups[tenant] = apiTenantWarmup{Day: tw.Day, Left: tw.Left, Until: tw.Until.UTC()}
	}
	for class, byTenant := range l.Ready {
		al.Queue[string(class)] = byTenant
	}
	return al
}

// laneChange reads a change's body and checks that the caller may make
// it: a lane carries every tenant's mail, so only a token for every
// tenant may stop or slow one (a tenant must not slow another).
func (a *API) laneChange(w http.ResponseWriter, r *http.Request, body any) bool {
	if !tenants(r).Every() {
		writeError(w, http.StatusForbidden, "forbidden", "a lane carries every tenant's mail: changing it takes an admin token for every tenant (tenants: [\"*\"])")
		return false
	}
	return decodeOptional(w, r, body)
}

func (a *API) laneResult(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrNoLane):
		writeError(w, http.StatusNotFound, "not_found", "no lane "+r.PathValue("name")+": a provider's name, or default:<domain> for a catch-all lane")
	case err != nil:
		a.internal(w, "changing the lane", err)
	default:
		for _, l := range a.laneControl.Lanes() {
			if l.Name == r.PathValue("name") {
				writeJSON(w, http.StatusOK, laneJSON(l, tenants(r)))
				return
			}
		}
		writeError(w, http.StatusNotFound, "not_found", "no lane "+r.PathValue("name"))
	}
}

// lanePause: POST /api/v1/lanes/{name}/pause {"reason": ...}, and with
// resume, POST .../resume.
func (a *API) lanePause(resume bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Reason string `json:"reason"`
		}
		if !a.laneChange(w, r, &body) {
			return
		}
		change := a.laneControl.Pause
		if resume {
			change = a.laneControl.Resume
		}
		a.laneResult(w, r, change(r.PathValue("name"), body.Reason, who(r).Name))
	}
}

// laneRate: POST /api/v1/lanes/{name}/rate {"rate": "300/min", "until": ..., "reason": ...}
func (a *API) laneRate(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Rate   string    `json:"rate"`
		Until  time.Time `json:"until"`
		Reason string    `json:"reason"`
	}
	if !a.laneChange(w, r, &body) {
		return
	}
	rate, err := config.ParseRate(body.Rate)
	if err != nil || rate.Count == 0 {
		writeError(w, http.StatusBadRequest, "bad_request", "rate must be a rate such as 300/min")
		return
	}
	if !body.Until.After(time.Now()) || body.Until.After(time.Now().Add(30*24*time.Hour)) {
		writeError(w, http.StatusBadRequest, "bad_request", "until must be an RFC 3339 time within the next 30 days: an override ends")
		return
	}
	perSecond := float64(rate.Count) / rate.Period.Seconds()
	a.laneResult(w, r, a.laneControl.SetRate(r.PathValue("name"), perSecond, body.Until, body.Reason, who(r).Name))
}

// withLanes answers 404 not_configured without a LaneControl.
func (a *API) withLanes(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.laneControl == nil {
			writeError(w, http.StatusNotFound, "not_configured", "this certgate has no lanes to show")
			return
		}
		h(w, r)
	}
}
