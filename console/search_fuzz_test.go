package console

import (
	"net/url"
	"testing"
	"unicode/utf8"

	"github.com/certgate/certgate/store"
)

// FuzzParseSearch: whatever a client puts in the search form, parseSearch
// either refuses it with a known text or makes bounded queries that keep
// its filters, and never a query that would find everything by accident
// (an empty id, subject, address or Message-ID where the text was not
// empty).
func FuzzParseSearch(f *testing.F) {
	f.Add("juan@empresa.example", "", "held", "2026-11-23T09:30", "2026-11-24", "")
	f.Add("<dl-0001@ca.example>", "message_id", "", "", "", "06h0000000000000000001")
	f.Add("Su certificado", "subject", "bounced", "2026-11-23", "2026-11-23", "")
	f.Add("06h17954244600000000000001", "", "", "2026-11-23T09:30:00Z", "", "")
	f.Add("<>", "", "", "0000-01-01", "9999-12-31T23:59", "a b")
	f.Add("\x00", "recipient", "Held", "2026-13-40", "", "")
	f.Fuzz(func(t *testing.T, q, in, state, since, until, after string) {
		v := url.Values{"q": {q}, "in": {in}, "state": {state}, "since": {since}, "until": {until}, "after": {after}}
		form, cands, bad := parseSearch(v)
		if bad != "" {
			if _, ok := texts["en"][bad]; !ok || cands != nil {
				t.Fatalf("refusal %q (no such text) with %d queries", bad, len(cands))
			}
			return
		}
		if len(cands) == 0 || len(cands) > 2 {
			t.Fatalf("%d queries", len(cands))
		}
		for _, c := range cands {
			qq := c.query
			if qq.Limit != pageSize || qq.After != form.After || string(qq.State) != form.State {
				t.Fatalf("query %+v lost the form's filters %+v", qq, form)
			}
			if !qq.Since.IsZero() && !qq.Until.IsZero() && !qq.Since.Before(qq.Until) {
				t.Fatalf("empty range %v..%v", qq.Since, qq.Until)
			}
			for _, s := range []string{qq.ID, qq.Recipient, qq.Subject, qq.MessageID} {
				if len(s) > maxSearchText || !utf8.ValidString(s) {
					t.Fatalf("unbounded or invalid text %q", s)
				}
			}
			switch st := qq.State; st {
			case "", store.StateQueued, store.StateHeld, store.StateDelivered, store.StateBounced:
			default:
				t.Fatalf("state %q", st)
			}
			text := qq.ID + qq.Recipient + qq.Subject + qq.MessageID
			if form.Q != "" && text == "" {
				t.Fatalf("text %q became no filter (%s)", form.Q, c.kind)
			}
			if form.Q == "" && text != "" {
				t.Fatalf("no text, but a filter %q", text)
			}
		}
	})
}
