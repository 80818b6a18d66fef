package store

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// The helpers below are shared by the backends, so that the rows and
// event texts they write are the same whichever one wrote them (and a
// copy from one to the other moves them unchanged).

// Nanos stores a time as Unix nanoseconds, with 0 for the zero time,
// whose UnixNano is undefined.
func Nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// FromNanos is the time Nanos stored, in UTC; the zero time for 0.
func FromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Page sizes of Search (Query.Limit) and Placements (PlacementQuery.Limit).
const (
	DefaultPage = 50
	MaxPage     = 500
)

// PageLimit is the page size a query's limit asks for: DefaultPage when
// it is not positive, at most MaxPage.
func PageLimit(limit int) int {
	if limit <= 0 {
		return DefaultPage
	}
	return min(limit, MaxPage)
}

// AttemptKind is the kind of the event that records an attempt ending in
// state; false for a state that is not an attempt's outcome.
func AttemptKind(state State) (string, bool) {
	switch state {
	case StateQueued:
		return "deferred", true
	case StateDelivered:
		return "delivered", true
	case StateBounced:
		return "bounced", true
	}
	return "", false
}

// AttemptDetail is the audit line for one attempt, e.g.
// "250 2.0.0 ok from mx.example.com via gmail"; next is the next
// attempt, zero for none.
func AttemptDetail(a Attempt, next time.Time) string {
	var b strings.Builder
	if a.Code != 0 {
		fmt.Fprintf(&b, "%d ", a.Code)
	}
	reply := a.Reply
	if reply == "" {
		reply = "no reply"
	}
	b.WriteString(reply)
	if a.Host != "" {
		b.WriteString(" from ")
		b.WriteString(a.Host)
	}
	if a.Provider != "" {
		b.WriteString(" via ")
		b.WriteString(a.Provider)
	}
	if !next.IsZero() {
		b.WriteString(", next attempt ")
		b.WriteString(next.UTC().Format(time.RFC3339))
	}
	return b.String()
}

// AcceptedEvent is the actor and detail of the "accepted" event Enqueue
// writes for m, e.g. "smtp:app@192.0.2.1" and
// "2 recipients, class bulk, 1234 octets, 1 held".
func AcceptedEvent(m Message, rcpts []NewRecipient) (actor, detail string) {
	actor = "smtp:" + m.ClientAddr
	if m.AuthUser != "" {
		actor = "smtp:" + m.AuthUser + "@" + m.ClientAddr
	}
	if m.Submitter != "" {
		actor = m.Submitter
	}
	s := "s"
	if len(rcpts) == 1 {
		s = ""
	}
	detail = fmt.Sprintf("%d recipient%s, class %s, %d octets", len(rcpts), s, m.Class, m.Size)
	held := 0
	for _, r := range rcpts {
		if r.State == StateHeld {
			held++
		}
	}
	if held > 0 {
		detail += fmt.Sprintf(", %d held", held)
	}
	if m.Note != "" {
		detail += ", " + m.Note
	}
	return actor, detail
}

// storedRefusal is a LinkRefusal as a backend stores Link.Refusals.Recent.
type storedRefusal struct {
	Time      int64  `json:"t"`
	Reason    string `json:"r"`
	Client    string `json:"c"`
	UserAgent string `json:"a"`
}

// EncodeRefusals is the JSON a backend stores a link's recent refusals as.
func EncodeRefusals(rs []LinkRefusal) (string, error) {
	out := make([]storedRefusal, len(rs))
	for i, r := range rs {
		out[i] = storedRefusal{Nanos(r.Time), r.Reason, r.Client, r.UserAgent}
	}
	b, err := json.Marshal(out)
	return string(b), err
}

// DecodeRefusals reads what EncodeRefusals wrote; nil for none.
func DecodeRefusals(s string) ([]LinkRefusal, error) {
	var in []storedRefusal
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, err
	}
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]LinkRefusal, len(in))
	for i, r := range in {
		out[i] = LinkRefusal{Time: FromNanos(r.Time), Reason: r.Reason, Client: r.Client, UserAgent: r.UserAgent}
	}
	return out, nil
}

// storedMove is a Move as a backend stores Placement.Moves.
type storedMove struct {
	From string `json:"f"`
	To   string `json:"t"`
	At   int64  `json:"at"`
}

// EncodeMoves is the JSON a backend stores a placement's moves as.
func EncodeMoves(ms []Move) (string, error) {
	out := make([]storedMove, len(ms))
	for i, m := range ms {
		out[i] = storedMove{m.From, m.To, Nanos(m.At)}
	}
	b, err := json.Marshal(out)
	return string(b), err
}

// DecodeMoves reads what EncodeMoves wrote; nil for none.
func DecodeMoves(s string) ([]Move, error) {
	var in []storedMove
	if err := json.Unmarshal([]byte(s), &in); err != nil {
		return nil, err
	}
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]Move, len(in))
	for i, m := range in {
		out[i] = Move{From: m.From, To: m.To, At: FromNanos(m.At)}
	}
	return out, nil
}

// CheckLinkStates checks SetLinkState's states before a backend acts.
func CheckLinkStates(from []LinkState, to LinkState) error {
	for _, s := range append([]LinkState{to}, from...) {
		if !s.Valid() {
			return fmt.Errorf("unknown link state %q", s)
		}
	}
	return nil
}
