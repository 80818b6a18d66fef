package policy

import "time"

// day is the warm-up day of t (0 the first) and when it ends: days are
// calendar dates in the schedule's zone, counted from the start date.
// Before the start it is day 0: a schedule that has not begun is no
// licence to send freely. The count is of dates, never of 24-hour spans,
// so a day of 23 or 25 hours, or a midnight that a clock change skips,
// cannot make it negative or early.
func (w *warmup) day(t time.Time) (int, time.Time) {
	ly, lm, ld := t.In(w.loc).Date()
	sy, sm, sd := w.start.In(w.loc).Date()
	// Dates at noon UTC: whole days apart, whatever the zone does.
	today := time.Date(ly, lm, ld, 12, 0, 0, 0, time.UTC)
	first := time.Date(sy, sm, sd, 12, 0, 0, 0, time.UTC)
	n := max(int(today.Sub(first)/(24*time.Hour)), 0)
	// The day ends at the next date's first instant; where a clock change
	// skips that midnight, time.Date gives an hour before it: take the
	// next whole hour past t instead.
	end := time.Date(ly, lm, ld+1, 0, 0, 0, 0, w.loc)
	if today.Before(first) {
		end = time.Date(sy, sm, sd+1, 0, 0, 0, 0, w.loc)
	}
	if !end.After(t) {
		end = t.Truncate(time.Hour).Add(time.Hour)
	}
	return n, end
}

// warmCount is the bulk sent on a warm-up's day.
type warmCount struct {
	Day  int `json:"day"`
	Sent int `json:"sent"`
}

// left is the bulk w still lets through today, counting with c, and when
// today ends; ok false when w holds nothing (none, or past its last day).
// A new day starts the count afresh; changed says the count moved.
func (c *warmCount) left(w *warmup, now time.Time) (left int, dayEnd time.Time, ok, changed bool) {
	if w == nil {
		return 0, time.Time{}, false, false
	}
	day, end := w.day(now)
	if day >= len(w.schedule) {
		return 0, time.Time{}, false, false
	}
	if day != c.Day {
		c.Day, c.Sent, changed = day, 0, true
	}
	return max(w.schedule[day]-c.Sent, 0), end, true, changed
}

// warmCap is the bulk mail the lane may still send today under its own
// warm-up, and when today ends; ok false when no warm-up holds it.
// Called with l.mu held.
func (l *Lane) warmCap(now time.Time) (left int, dayEnd time.Time, ok bool) {
	left, dayEnd, ok, changed := l.warm.left(l.warmup, now)
	if changed {
		l.version++
	}
	return left, dayEnd, ok
}

// tenantCap is warmCap for tenant's own warm-up on the lane. Called with
// l.mu held.
func (l *Lane) tenantCap(tenant string, now time.Time) (left int, dayEnd time.Time, ok bool) {
	w := l.tenantWarmups[tenant]
	if w == nil {
		return 0, time.Time{}, false
	}
	c := l.tenantWarm[tenant]
	if c == nil {
		c = &warmCount{Day: -1}
		l.tenantWarm[tenant] = c
	}
	left, dayEnd, ok, changed := c.left(w, now)
	if changed {
		l.version++
	}
	return left, dayEnd, ok
}

// TakeBulk counts one bulk message of tenant leaving the lane against its
// warm-up day's caps, the lane's and the tenant's. The queue calls it as
// it takes the message, under its own lock, so that workers of the lane
// cannot pass a cap together.
func (l *Lane) TakeBulk(tenant string) {
	if l.warmup == nil && l.tenantWarmups[tenant] == nil {
		return
	}
	now := l.clk.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, _, ok := l.warmCap(now); ok {
		l.warm.Sent++
		l.version++
	}
	if _, _, ok := l.tenantCap(tenant, now); ok {
		l.tenantWarm[tenant].Sent++
		l.version++
	}
}

// TenantWarmup is where a tenant's own warm-up stands on a lane.
type TenantWarmup struct {
	Day   int       // 0 the first
	Left  int       // bulk messages the tenant may still send today
	Until time.Time // when today ends
}

// TenantWarmups are the tenants whose own warm-up holds the lane today.
func (l *Lane) TenantWarmups() map[string]TenantWarmup {
	if len(l.tenantWarmups) == 0 {
		return nil
	}
	now := l.clk.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]TenantWarmup{}
	for tenant := range l.tenantWarmups {
		if left, end, ok := l.tenantCap(tenant, now); ok {
			out[tenant] = TenantWarmup{Day: l.tenantWarm[tenant].Day, Left: left, Until: end}
		}
	}
	return out
}
