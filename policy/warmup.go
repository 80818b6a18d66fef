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

// warmCap is the bulk mail the lane may still send today under its
// warm-up, and when today ends; ok false when no warm-up holds it (none,
// or past its last day). Called with l.mu held.
func (l *Lane) warmCap(now time.Time) (left int, dayEnd time.Time, ok bool) {
	if l.warmup == nil {
		return 0, time.Time{}, false
	}
	day, end := l.warmup.day(now)
	if day >= len(l.warmup.schedule) {
		return 0, time.Time{}, false
	}
	if day != l.warmDay {
		l.warmDay, l.warmSent = day, 0
		l.version++
	}
	return max(l.warmup.schedule[day]-l.warmSent, 0), end, true
}

// TakeBulk counts one bulk message leaving the lane against its warm-up
// day's cap. The queue calls it as it takes the message, under its own
// lock, so that workers of the lane cannot pass the cap together.
func (l *Lane) TakeBulk() {
	if l.warmup == nil {
		return
	}
	now := l.clk.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, _, ok := l.warmCap(now); ok {
		l.warmSent++
		l.version++
	}
}
