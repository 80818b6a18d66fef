package main

import "testing"

// The limit keeps a small heap under 128 MiB, lets a backlog's live heap
// double, keeps a flood's heap within 7/8 of the memory budget, and
// never comes within 32 MiB of the live heap, so the collector can never
// be made to run back to back.
func TestHeapLimit(t *testing.T) {
	const budget = 256 << 20
	for _, c := range []struct {
		live   uint64
		budget int64
		want   int64
	}{
		{0, 0, 128 << 20},
		{30 << 20, 0, 128 << 20},
		{48 << 20, budget, 128 << 20},
		{80 << 20, budget, 192 << 20},  // a backlog: twice the live heap
		{150 << 20, budget, 224 << 20}, // capped: seven eighths of the budget
		{210 << 20, budget, 242 << 20}, // never within 32 MiB of the live heap
		{2 << 30, 0, 4<<30 + 32<<20},
	} {
		got := heapLimit(c.live, c.budget)
		if got != c.want {
			t.Errorf("heapLimit(%d MiB, %d MiB) = %d MiB, want %d MiB", c.live>>20, c.budget>>20, got>>20, c.want>>20)
		}
		if uint64(got) < c.live+32<<20 {
			t.Errorf("heapLimit(%d MiB, %d MiB) = %d MiB: within 32 MiB of the live heap", c.live>>20, c.budget>>20, got>>20)
		}
	}
}
