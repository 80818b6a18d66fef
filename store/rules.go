package store

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// The rules below hold whatever the backend: each backend calls them
// rather than write its own copy, and store/storetest holds every backend
// to them.

// Valid reports whether s is one of the link states of the contract.
func (s LinkState) Valid() bool {
	switch s {
	case LinkPending, LinkEnabled, LinkUsed, LinkExpired, LinkRevoked:
		return true
	}
	return false
}

// CheckEnqueue checks the arguments of Store.Enqueue: a message id, at
// least one recipient, content indexes in range, recipients queued or
// held, links pending or enabled with a use budget that is not negative.
func CheckEnqueue(m Message, contents [][]byte, rcpts []NewRecipient) error {
	if m.ID == "" {
		return errors.New("enqueue: empty message id")
	}
	if len(rcpts) == 0 {
		return fmt.Errorf("enqueue %s: no recipients", m.ID)
	}
	if a := m.Idempotency; a != nil && (a.Key == "" || a.Status == 0) {
		return fmt.Errorf("enqueue %s: an idempotency answer needs a key and a status", m.ID)
	}
	for i, r := range rcpts {
		if r.Content < 0 || r.Content >= len(contents) {
			return fmt.Errorf("enqueue %s: recipient %d refers to content %d of %d", m.ID, i, r.Content, len(contents))
		}
		if r.State != StateQueued && r.State != StateHeld {
			return fmt.Errorf("enqueue %s: recipient %d has state %q, want queued or held", m.ID, i, r.State)
		}
		for j, l := range r.Links {
			if l.State != LinkPending && l.State != LinkEnabled {
				return fmt.Errorf("enqueue %s: link %d of recipient %d has state %q, want pending or enabled", m.ID, j, i, l.State)
			}
			if r.Seed != "" && l.State != LinkPending {
				return fmt.Errorf("enqueue %s: link %d of seed copy %d is %s; a seed copy's links never turn on", m.ID, j, i, l.State)
			}
			if l.MaxUses < 0 {
				return fmt.Errorf("enqueue %s: link %d of recipient %d has max uses %d", m.ID, j, i, l.MaxUses)
			}
		}
	}
	return nil
}

// Reasons a use is refused that are not a link state (LinkUse.Why).
const (
	WhyExpired = "expired"
	WhyNoUses  = "no uses left"
)

// UseDecision is what one use of a link comes to.
type UseDecision struct {
	OK      bool   // a use was counted
	Why     string // when refused: the link's state, WhyExpired or WhyNoUses
	Changed bool   // the link was changed and must be written back
}

// DecideUse applies one use at now to l, the rules of Store.UseLink: a
// link that could still be used (pending or enabled) but is past its expiry
// becomes expired; an enabled one with uses left counts one, and becomes
// used when that was its last. Links that are used, revoked or already
// expired keep their state, so the helpdesk's word stands.
func DecideUse(l *Link, now time.Time) UseDecision {
	live := l.State == LinkPending || l.State == LinkEnabled
	if live && !l.ExpiresAt.IsZero() && !now.Before(l.ExpiresAt) {
		l.State = LinkExpired
		return UseDecision{Why: WhyExpired, Changed: true}
	}
	if l.State != LinkEnabled {
		return UseDecision{Why: string(l.State)}
	}
	if l.MaxUses > 0 && l.Uses >= l.MaxUses {
		// Only an enabled link with its uses spent gets here: one that
		// was moved back to enabled, which gives no uses back.
		return UseDecision{Why: WhyNoUses}
	}
	l.Uses++
	if l.MaxUses > 0 && l.Uses >= l.MaxUses {
		l.State = LinkUsed
	}
	return UseDecision{OK: true, Changed: true}
}

// AddressKey is addr with its domain lower-cased, the form search by
// address compares: the local part is exact (RFC 5321 2.4), the domain is
// not case-sensitive.
func AddressKey(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return addr
	}
	return addr[:i+1] + strings.ToLower(addr[i+1:])
}

// DomainOf is the lower-cased part after the last '@', or "" without one.
func DomainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(addr[i+1:])
}

// What a link keeps of its refused presses (Store.RefuseLink).
const (
	// RecentRefusals is how many of a link's latest refusals it keeps.
	RecentRefusals = 5
	// RefusalNoticeEvery is the least time between two link_refused
	// events of one link: each is an audit row and a webhook notice.
	RefusalNoticeEvery = time.Hour
	// maxRefusalText bounds each text of a kept refusal, in bytes.
	maxRefusalText = 120
)

// CountRefusal applies one refused press r to l: it counts it, keeps it
// among the RecentRefusals latest (texts cut to 120 bytes), and says
// whether a link_refused event is due: for the link's first refusal, then
// for the first one RefusalNoticeEvery or more after the last event. When
// one is due, count is how many refusals it stands for, those since the
// last event, this one included.
func CountRefusal(l *Link, r LinkRefusal) (notice bool, count int64) {
	r.Reason, r.Client, r.UserAgent = cut(r.Reason), cut(r.Client), cut(r.UserAgent)
	rf := &l.Refusals
	rf.Count++
	if len(rf.Recent) >= RecentRefusals {
		rf.Recent = append(rf.Recent[:0:0], rf.Recent[len(rf.Recent)-RecentRefusals+1:]...)
	}
	rf.Recent = append(rf.Recent, r)
	if !rf.NoticedAt.IsZero() && r.Time.Before(rf.NoticedAt.Add(RefusalNoticeEvery)) {
		return false, 0
	}
	count = rf.Count - rf.Noticed
	rf.Noticed, rf.NoticedAt = rf.Count, r.Time
	return true, count
}

// RefusalDetail is the detail of a link_refused event: the reason, and
// how many refusals it stands for when more than one.
func RefusalDetail(reason string, count int64) string {
	if count <= 1 {
		return cut(reason)
	}
	return fmt.Sprintf("%s (%d refusals since the last notice)", cut(reason), count)
}

// cut keeps the first maxRefusalText bytes of s, whole characters only.
func cut(s string) string {
	if len(s) <= maxRefusalText {
		return s
	}
	return strings.ToValidUTF8(s[:maxRefusalText], "")
}
