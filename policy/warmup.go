package policy

import "time"

// day is the warm-up day of t (0 the first), and when it ends: days run
// from the schedule's start, midnight to midnight in its zone (so a day
// with a clock change is 23 or 25 hours long). Before the start, it is
// day 0: a schedule that has not begun is not a licence to send freely.
func (w *warmup) day(t time.Time) (int, time.Time) {
	local := t.In(w.loc)
	n := 0
	if local.After(w.start) {
		// Whole calendar days between the two dates, whatever their hours.
		y, m, d := local.Date()
		today := time.Date(y, m, d, 0, 0, 0, 0, w.loc)
		n = int(today.Sub(w.start).Round(24*time.Hour) / (24 * time.Hour))
	}
	y, m, d := local.Date()
	end := time.Date(y, m, d+1, 0, 0, 0, 0, w.loc)
	if local.Before(w.start) {
		end = w.start.AddDate(0, 0, 1)
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
