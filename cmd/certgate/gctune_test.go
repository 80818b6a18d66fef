package main

import "testing"

// The limit keeps a small heap under 128 MiB and stays well above a large
// live heap, so the collector can never be made to run back to back.
func TestHeapLimit(t *testing.T) {
	for _, c := range []struct {
		live uint64
		want int64
	}{
		{0, 128 << 20},
		{30 << 20, 128 << 20},
		{48 << 20, 128 << 20},
		{80 << 20, 192 << 20},
		{2 << 30, 4<<30 + 32<<20},
	} {
		if got := heapLimit(c.live); got != c.want {
			t.Errorf("heapLimit(%d MiB) = %d MiB, want %d MiB", c.live>>20, got>>20, c.want>>20)
		}
		if got := heapLimit(c.live); uint64(got) < 2*c.live {
			t.Errorf("heapLimit(%d MiB) = %d MiB: under twice the live heap", c.live>>20, got>>20)
		}
	}
}
