package placement

import (
	"context"
	"errors"
	"testing"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
)

// Tabs are read for a Gmail inbox only, in batches of at most
// maxCategoryBatch UIDs (one connection each, never one per copy), and a
// failure leaves the copies in the inbox class.
func TestTabs(t *testing.T) {
	var calls [][]uint32
	fail := false
	w := NewWatcher(Options{Categories: func(_ context.Context, _ config.SeedMailbox, mailbox string, uids []uint32) (map[uint32]string, error) {
		if mailbox != "INBOX" {
			t.Errorf("categories asked in %s", mailbox)
		}
		calls = append(calls, uids)
		if fail {
			return nil, errors.New("throttled")
		}
		out := map[uint32]string{}
		for _, u := range uids {
			out[u] = map[bool]string{true: "promotions", false: "primary"}[u%2 == 0]
		}
		return out, nil
	}})
	seen := make([]sighting, maxCategoryBatch+5)
	for i := range seen {
		seen[i].uid = uint32(i + 1)
	}
	gmailInbox := &folder{role: roleInbox, name: "INBOX", gmail: true}
	tabs := w.tabs(context.Background(), gmailInbox, seen)
	if len(calls) != 2 || len(calls[0]) != maxCategoryBatch || len(calls[1]) != 5 {
		t.Fatalf("calls of %v UIDs, want %d then 5", lens(calls), maxCategoryBatch)
	}
	if got := folderClass(roleInbox, tabs[2]); got != "tab:promotions" {
		t.Errorf("uid 2: %s, want tab:promotions", got)
	}
	if got := folderClass(roleInbox, tabs[3]); got != store.FolderInbox {
		t.Errorf("uid 3 (primary): %s, want inbox", got)
	}

	calls = nil
	if tabs := w.tabs(context.Background(), &folder{role: roleJunk, name: "[Gmail]/Spam", gmail: true}, seen); tabs != nil || calls != nil {
		t.Errorf("categories read in the junk folder: %v", lens(calls))
	}
	if tabs := w.tabs(context.Background(), &folder{role: roleInbox, name: "INBOX"}, seen); tabs != nil || calls != nil {
		t.Errorf("categories read on a server without X-GM-EXT-1: %v", lens(calls))
	}
	fail = true
	if tabs := w.tabs(context.Background(), gmailInbox, seen[:3]); folderClass(roleInbox, tabs[2]) != store.FolderInbox {
		t.Errorf("after a failed lookup uid 2 is %s, want inbox", folderClass(roleInbox, tabs[2]))
	}
}

func lens(calls [][]uint32) []int {
	var n []int
	for _, c := range calls {
		n = append(n, len(c))
	}
	return n
}
