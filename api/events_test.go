package api

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/certgate/certgate/store"
)

// TestAPIMessageViewPagesEvents: a message with many events (one had
// 7.3 MB of them) shows its latest 100, oldest first, with a token for the
// page before; following the tokens walks every event once.
func TestAPIMessageViewPagesEvents(t *testing.T) {
	e := newAPIEnv(t)
	id := e.enqueue(1, "juan@empresa.example", store.StateQueued, store.LinkEnabled)
	at := time.Date(2026, 11, 23, 9, 1, 0, 0, time.UTC)
	const notes = 250
	for i := range notes {
		if err := e.st.AddEvent(context.Background(), store.Event{MessageID: id, Time: at.Add(time.Duration(i+1) * time.Second),
			Kind: "link_refused", Actor: "browser:192.0.2.66", Detail: fmt.Sprintf("no_form %d", i), Count: int64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	type page struct {
		Events []struct {
			Time   time.Time `json:"time"`
			Kind   string    `json:"kind"`
			Detail string    `json:"detail"`
			Count  int64     `json:"count"`
		} `json:"events"`
		EventsNext string `json:"events_next"`
	}
	var p page
	if code := e.call("GET", "/api/v1/messages/"+id, "", &p); code != 200 {
		t.Fatalf("message view: %d", code)
	}
	if len(p.Events) != 100 || p.EventsNext == "" {
		t.Fatalf("first page: %d events, next %q; want the latest 100 and a token", len(p.Events), p.EventsNext)
	}
	if last := p.Events[99]; last.Detail != fmt.Sprintf("no_form %d", notes-1) || last.Count != notes {
		t.Errorf("the page's last event is %+v, want the newest", last)
	}
	seen := map[string]bool{}
	var times []time.Time
	pages := 0
	for {
		pages++
		for _, ev := range p.Events {
			if seen[ev.Detail] {
				t.Fatalf("%q on two pages", ev.Detail)
			}
			seen[ev.Detail] = true
		}
		var pt []time.Time
		for _, ev := range p.Events {
			pt = append(pt, ev.Time)
		}
		times = append(pt, times...)
		if p.EventsNext == "" {
			break
		}
		next := p.EventsNext
		p = page{}
		if code := e.call("GET", "/api/v1/messages/"+id+"?events_limit=100&events_after="+next, "", &p); code != 200 {
			t.Fatalf("page after %s: %d", next, code)
		}
	}
	if pages != 3 || len(seen) != notes+1 {
		t.Fatalf("%d pages with %d events, want 3 with %d (the notes and accepted)", pages, len(seen), notes+1)
	}
	for i := 1; i < len(times); i++ {
		if times[i].Before(times[i-1]) {
			t.Fatalf("the pages walked back are not oldest first at %d", i)
		}
	}
	// A small page, and bad page parameters.
	if code := e.call("GET", "/api/v1/messages/"+id+"?events_limit=1", "", &p); code != 200 || len(p.Events) != 1 || p.EventsNext == "" {
		t.Errorf("events_limit=1: %d, %d events, next %q", code, len(p.Events), p.EventsNext)
	}
	var apiErr map[string]string
	for _, bad := range []string{"events_limit=0", "events_limit=1001", "events_limit=x", "events_after=x", "events_after=-1"} {
		if code := e.call("GET", "/api/v1/messages/"+id+"?"+bad, "", &apiErr); code != 400 || apiErr["error"] != "bad_request" {
			t.Errorf("%s: %d %v", bad, code, apiErr)
		}
	}
	// The view stays small whatever the trail holds.
	resp := e.do("GET", "/api/v1/messages/"+id, "")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if len(body) > 40<<10 {
		t.Errorf("the view of a message with %d events is %d bytes", notes, len(body))
	}
}
