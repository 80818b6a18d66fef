package console

import (
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/certgate/certgate/store"
)

// Bounds on what the search form takes: the longest search text, page
// token, and the page size.
const (
	maxSearchText = 256
	maxAfter      = 64
	pageSize      = 50
)

// Search kinds: what the search text is looked up as.
const (
	inAuto      = ""
	inRecipient = "recipient"
	inSubject   = "subject"
	inMessageID = "message_id" // the Message-ID header, or certgate's id
)

// searchForm is the search form as submitted (every field is the
// client's, to be shown back escaped).
type searchForm struct {
	Q, In, State, Since, Until, After string
}

// candidate is one way to read the search text: the kind it is taken as
// and the query for it. A search tries its candidates in order and shows
// the first that finds mail.
type candidate struct {
	kind  string
	query store.Query
}

// parseSearch reads the search form. With no text and no filters it is
// the newest mail. The error is a text key (errBad...) to show the
// person.
func parseSearch(v url.Values) (searchForm, []candidate, string) {
	f := searchForm{Q: strings.TrimSpace(v.Get("q")), In: v.Get("in"), State: v.Get("state"),
		Since: strings.TrimSpace(v.Get("since")), Until: strings.TrimSpace(v.Get("until")), After: v.Get("after")}
	for _, s := range []string{f.Q, f.In, f.State, f.Since, f.Until, f.After} {
		if len(s) > maxSearchText || !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl) {
			return f, nil, "err_text"
		}
	}
	base := store.Query{Limit: pageSize}
	switch st := store.State(f.State); st {
	case "", store.StateQueued, store.StateHeld, store.StateDelivered, store.StateBounced:
		base.State = st
	default:
		return f, nil, "err_state"
	}
	var err string
	if base.Since, err = parseTime(f.Since, false); err != "" {
		return f, nil, err
	}
	if base.Until, err = parseTime(f.Until, true); err != "" {
		return f, nil, err
	}
	if !base.Since.IsZero() && !base.Until.IsZero() && !base.Since.Before(base.Until) {
		return f, nil, "err_range"
	}
	if f.After != "" {
		if len(f.After) > maxAfter || strings.ContainsFunc(f.After, unicode.IsSpace) {
			return f, nil, "err_text"
		}
		base.After = f.After
	}
	kinds, err := kindsOf(f.Q, f.In)
	if err != "" {
		return f, nil, err
	}
	var out []candidate
	for _, k := range kinds {
		q := base
		switch k {
		case inRecipient:
			q.Recipient = f.Q
		case inSubject:
			q.Subject = f.Q
		case inMessageID:
			q.MessageID = strings.TrimSuffix(strings.TrimPrefix(f.Q, "<"), ">")
			if q.MessageID == "" { // "<>" is no filter: it would find everything
				return f, nil, "err_text"
			}
		case "id":
			q.ID = f.Q
		}
		out = append(out, candidate{kind: k, query: q})
	}
	return f, out, ""
}

// kindsOf is how the text q is looked up, in order: as the form's choice
// in says, or, left to certgate, by its shape. "id" is certgate's own id,
// which the message id choice tries after the header.
func kindsOf(q, in string) ([]string, string) {
	if q == "" {
		if in != inAuto && in != inRecipient && in != inSubject && in != inMessageID {
			return nil, "err_text"
		}
		return []string{inAuto}, ""
	}
	spaced := strings.ContainsFunc(q, unicode.IsSpace)
	switch in {
	case inRecipient:
		return []string{inRecipient}, ""
	case inSubject:
		return []string{inSubject}, ""
	case inMessageID:
		return []string{inMessageID, "id"}, ""
	case inAuto:
	default:
		return nil, "err_text"
	}
	switch {
	case strings.HasPrefix(q, "<") && strings.HasSuffix(q, ">") && !spaced:
		return []string{inMessageID}, ""
	case strings.Contains(q, "@") && !spaced:
		return []string{inRecipient, inMessageID}, ""
	case !spaced && len(q) >= 16 && len(q) <= maxAfter && isIDLike(q):
		return []string{"id", inSubject}, ""
	}
	return []string{inSubject}, ""
}

// isIDLike: certgate's ids are lower-case letters and digits.
func isIDLike(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// timeLayouts are what the time fields take, in UTC: a browser's
// datetime-local value, with or without seconds, a date, or RFC 3339.
var timeLayouts = []string{"2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02 15:04", time.RFC3339, "2006-01-02"}

// parseTime reads a time field; a date alone is its first moment, or, for
// the end of a range, the first moment of the next day (so that "until
// 2026-11-23" includes the 23rd).
func parseTime(s string, end bool) (time.Time, string) {
	if s == "" {
		return time.Time{}, ""
	}
	for _, layout := range timeLayouts {
		t, err := time.ParseInLocation(layout, s, time.UTC)
		if err != nil {
			continue
		}
		if t.Year() < 2000 || t.Year() > 9999 {
			return time.Time{}, "err_time"
		}
		if layout == "2006-01-02" && end {
			t = t.AddDate(0, 0, 1)
		}
		return t.UTC(), ""
	}
	return time.Time{}, "err_time"
}
