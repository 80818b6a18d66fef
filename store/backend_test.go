package store

import (
	"reflect"
	"testing"
	"time"
)

func TestNanos(t *testing.T) {
	if Nanos(time.Time{}) != 0 || !FromNanos(0).IsZero() {
		t.Fatal("the zero time does not store as 0")
	}
	at := time.Date(2026, 3, 14, 9, 26, 53, 589793000, time.FixedZone("x", 3600))
	if got := FromNanos(Nanos(at)); !got.Equal(at) || got.Location() != time.UTC {
		t.Fatalf("FromNanos(Nanos(%v)) = %v", at, got)
	}
}

func TestPageLimit(t *testing.T) {
	for in, want := range map[int]int{-1: DefaultPage, 0: DefaultPage, 7: 7, MaxPage: MaxPage, MaxPage + 1: MaxPage} {
		if got := PageLimit(in); got != want {
			t.Errorf("PageLimit(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestStoredJSON(t *testing.T) {
	at := time.Date(2026, 3, 14, 9, 0, 0, 0, time.UTC)
	rs := []LinkRefusal{{Time: at, Reason: "expired", Client: "192.0.2.1", UserAgent: "ua"}}
	s, err := EncodeRefusals(rs)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeRefusals(s); err != nil || !reflect.DeepEqual(got, rs) {
		t.Fatalf("refusals %s = %+v, %v; want %+v", s, got, err, rs)
	}
	ms := []Move{{From: FolderInbox, To: FolderJunk, At: at}}
	if s, err = EncodeMoves(ms); err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeMoves(s); err != nil || !reflect.DeepEqual(got, ms) {
		t.Fatalf("moves %s = %+v, %v; want %+v", s, got, err, ms)
	}
	if got, err := DecodeMoves("[]"); err != nil || got != nil {
		t.Fatalf("no moves = %+v, %v; want nil", got, err)
	}
	if _, err := DecodeRefusals("not json"); err == nil {
		t.Fatal("DecodeRefusals took what is not JSON")
	}
}

func TestCheckLinkStates(t *testing.T) {
	if err := CheckLinkStates([]LinkState{LinkPending}, LinkEnabled); err != nil {
		t.Fatal(err)
	}
	if CheckLinkStates(nil, "bogus") == nil || CheckLinkStates([]LinkState{"bogus"}, LinkEnabled) == nil {
		t.Fatal("an unknown state passed")
	}
}
