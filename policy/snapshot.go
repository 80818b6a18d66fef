package policy

import (
	"maps"
	"strings"
	"time"

	"github.com/certgate/certgate/config"
)

// Snapshot is a lane's state as it is kept across restarts (store.
// LaneStates holds it as JSON): what its rules and operators made of it.
// Its configuration is not in it: that comes from the configuration.
type Snapshot struct {
	Factor          float64              `json:"factor"`
	Floor           float64              `json:"floor,omitempty"`
	LastCut         time.Time            `json:"last_cut"`
	SlowUntil       time.Time            `json:"slow_until"`
	LastStep        time.Time            `json:"last_step"`
	SuspendBulk     time.Time            `json:"suspend_bulk"`
	SuspendAll      time.Time            `json:"suspend_all"`
	TenantSuspended map[string]time.Time `json:"tenant_suspended,omitempty"`
	SetConns        int                  `json:"set_connections,omitempty"`
	SetPerConn      int                  `json:"set_per_connection,omitempty"`
	SetUntil        time.Time            `json:"set_until"`
	Paused          bool                 `json:"paused,omitempty"`
	Override        float64              `json:"override,omitempty"`
	OverrideUntil   time.Time            `json:"override_until"`
	Reason          string               `json:"reason,omitempty"`
	Since           time.Time            `json:"since"`
	WarmDay         int                  `json:"warm_day,omitempty"`
	WarmSent        int                  `json:"warm_sent,omitempty"`
	TenantWarm      map[string]warmCount `json:"tenant_warm,omitempty"` // tenants' own warm-up days
}

// Snapshot returns the lane's state and its version: a lane whose
// version has not moved since the last save need not be saved again.
func (l *Lane) Snapshot() (Snapshot, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refresh(l.clk.now())
	return Snapshot{Factor: l.factor, Floor: l.floor, LastCut: l.lastCut, SlowUntil: l.slowUntil, LastStep: l.lastStep,
		SuspendBulk: l.suspendBulk, SuspendAll: l.suspendAll, TenantSuspended: maps.Clone(l.tenantSuspended),
		SetConns: l.setConns, SetPerConn: l.setPerConn, SetUntil: l.setUntil, Paused: l.paused,
		Override: l.override, OverrideUntil: l.overrideUntil, Reason: l.reason, Since: l.since,
		WarmDay: l.warm.Day, WarmSent: l.warm.Sent, TenantWarm: l.tenantWarmSnapshot()}, l.version
}

// Restore puts back a state saved by Snapshot, at start; what has ended
// since ends at the next look.
func (l *Lane) Restore(s Snapshot) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !(s.Factor > 0 && s.Factor <= 1) {
		s.Factor = 1 // not a state this binary wrote: the configuration rules
	}
	if len(s.TenantSuspended) > maxTenantSuspensions {
		s.TenantSuspended = nil
	}
	s.WarmSent = max(s.WarmSent, 0)
	l.factor, l.floor, l.lastCut, l.slowUntil, l.lastStep = s.Factor, s.Floor, s.LastCut, s.SlowUntil, s.LastStep
	l.suspendBulk, l.suspendAll, l.tenantSuspended = s.SuspendBulk, s.SuspendAll, maps.Clone(s.TenantSuspended)
	l.setConns, l.setPerConn, l.setUntil = s.SetConns, s.SetPerConn, s.SetUntil
	l.paused, l.override, l.overrideUntil = s.Paused, s.Override, s.OverrideUntil
	l.reason, l.since = s.Reason, s.Since
	l.warm = warmCount{Day: s.WarmDay, Sent: s.WarmSent}
	l.tenantWarm = map[string]*warmCount{}
	for tenant, c := range s.TenantWarm {
		// Only tenants still warming here: the configuration rules which.
		if l.tenantWarmups[tenant] != nil {
			l.tenantWarm[tenant] = &warmCount{Day: c.Day, Sent: max(c.Sent, 0)}
		}
	}
}

// tenantWarmSnapshot copies the tenants' warm-up counts. Called with l.mu
// held.
func (l *Lane) tenantWarmSnapshot() map[string]warmCount {
	if len(l.tenantWarm) == 0 {
		return nil
	}
	out := make(map[string]warmCount, len(l.tenantWarm))
	for tenant, c := range l.tenantWarm {
		out[tenant] = *c
	}
	return out
}

// AtRest reports whether nothing of s holds at now: no slowdown, pause,
// suspension, set limits, override or warm-up count. A catch-all lane at
// rest needs no stored state: the configuration says it all.
func (s Snapshot) AtRest(now time.Time) bool {
	for _, until := range s.TenantSuspended {
		if now.Before(until) {
			return false
		}
	}
	return s.Factor >= 1 && !s.Paused && !now.Before(s.SuspendBulk) && !now.Before(s.SuspendAll) &&
		!now.Before(s.SetUntil) && (s.Override == 0 || !now.Before(s.OverrideUntil)) &&
		s.WarmSent == 0 && len(s.TenantWarm) == 0
}

// AtRest reports whether nothing of s, a snapshot of the lane, holds it
// now on the lane's clock.
func (l *Lane) AtRest(s Snapshot) bool { return s.AtRest(l.clk.now()) }

// maxTenantSuspensions bounds the tenants a restored state may hold: the
// configuration has at most a few hundred tenants.
const maxTenantSuspensions = 10000

// LaneByKey is the lane of key (a provider's name, or default/<domain>),
// made if it was not yet; false for a provider the configuration no
// longer has.
func (p *Policy) LaneByKey(key string) (*Lane, bool) {
	if domain, ok := strings.CutPrefix(key, config.CatchAllProvider+"/"); ok {
		if domain == "" {
			return nil, false
		}
		return p.lane(p.catchAll.name, key, p.catchAll.limits), true
	}
	return p.ProviderLane(key)
}
