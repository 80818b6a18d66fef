package store

import (
	"encoding/json"
	"testing"
	"time"
)

// The event details are what the helpdesk and webhook receivers read.
func TestPlacementDetails(t *testing.T) {
	delivered := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	p := Placement{Seed: "gmail-1", Folder: FolderPending, DeliveredAt: delivered}
	f := Found{Folder: FolderJunk, Mailbox: "[Gmail]/Spam", ArrivedAt: delivered.Add(1234 * time.Millisecond), DetectedAt: delivered.Add(2 * time.Second)}
	if got, want := ApplyFound(&p, f), "gmail-1: junk (arrived 2026-12-05T10:00:01Z, 1.2s after delivery)"; got != want {
		t.Errorf("first find = %q, want %q", got, want)
	}
	if got := ApplyFound(&p, Found{Folder: FolderJunk, UID: 2}); got != "" || p.UID != 2 {
		t.Errorf("same folder = %q, uid %d; want no event, uid 2", got, p.UID)
	}
	if got := ApplyFound(&p, Found{Folder: FolderInbox, UID: 3, DetectedAt: f.DetectedAt}); got != "" || p.Folder != FolderJunk || p.UID != 2 {
		t.Errorf("a find elsewhere no later than the last = %q, folder %s; want none, junk", got, p.Folder)
	}
	if got, want := ApplyFound(&p, Found{Folder: FolderInbox, DetectedAt: f.DetectedAt.Add(time.Second)}), "gmail-1: junk -> inbox"; got != want {
		t.Errorf("move = %q, want %q", got, want)
	}

	early := Placement{Seed: "gmail-1", Folder: FolderPending, DeliveredAt: delivered.Add(800 * time.Millisecond)}
	if got, want := ApplyFound(&early, Found{Folder: FolderInbox, ArrivedAt: delivered}), "gmail-1: inbox (arrived 2026-12-05T10:00:00Z, 800ms before delivery)"; got != want {
		t.Errorf("arrival before delivery = %q, want %q", got, want)
	}
	undelivered := Placement{Seed: "gmail-1", Folder: FolderPending}
	if got, want := ApplyFound(&undelivered, Found{Folder: "tab:promotions", ArrivedAt: delivered}), "gmail-1: tab:promotions (arrived 2026-12-05T10:00:00Z)"; got != want {
		t.Errorf("found before delivery was recorded = %q, want %q", got, want)
	}

	pending := Placement{Seed: "gmail-1", Folder: FolderPending, DeliveredAt: delivered}
	changed, got := ClosePlacementAt(&pending, delivered.Add(15*time.Minute))
	if want := "gmail-1: missing (not found 15m0s after delivery)"; !changed || got != want || pending.Folder != FolderMissing {
		t.Errorf("close = %v, %q, folder %s; want %q, missing", changed, got, pending.Folder, want)
	}
	if changed, got := ClosePlacementAt(&pending, delivered.Add(time.Hour)); changed || got != "" || !pending.ClosedAt.Equal(delivered.Add(15*time.Minute)) {
		t.Errorf("second close = %v, %q, closed at %v", changed, got, pending.ClosedAt)
	}
}

func TestCheckFound(t *testing.T) {
	for _, f := range []Found{
		{Folder: ""}, {Folder: FolderPending}, {Folder: FolderMissing},
		{Folder: FolderInbox, Verdicts: json.RawMessage(`{"spf":`)},
	} {
		if CheckFound(f) == nil {
			t.Errorf("CheckFound(%+v) = nil", f)
		}
	}
	if err := CheckFound(Found{Folder: "other:Archive", Verdicts: json.RawMessage(`{}`)}); err != nil {
		t.Errorf("CheckFound(other folder) = %v", err)
	}
}
