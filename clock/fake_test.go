package clock

import (
	"context"
	"testing"
	"time"
)

var epoch = time.Date(2026, 12, 5, 9, 0, 0, 0, time.UTC)

func fired(t Timer) (time.Time, bool) {
	select {
	case at := <-t.C():
		return at, true
	default:
		return time.Time{}, false
	}
}

func TestFakeFiresInDeadlineOrderAtTheirDeadlines(t *testing.T) {
	f := NewFake(epoch)
	late := f.NewTimer(3 * time.Second)
	early := f.NewTimer(time.Second)
	never := f.NewTimer(time.Hour)
	f.Advance(500 * time.Millisecond)
	if _, ok := fired(early); ok {
		t.Fatal("a timer fired before its deadline")
	}
	f.Advance(5 * time.Second)
	at, ok := fired(early)
	if !ok || !at.Equal(epoch.Add(time.Second)) {
		t.Fatalf("early timer: %v %v, want it at its deadline", at, ok)
	}
	if at, ok := fired(late); !ok || !at.Equal(epoch.Add(3*time.Second)) {
		t.Fatalf("late timer: %v %v", at, ok)
	}
	if _, ok := fired(never); ok {
		t.Fatal("the hour timer fired")
	}
	if got := f.Now(); !got.Equal(epoch.Add(5500 * time.Millisecond)) {
		t.Fatalf("now %v", got)
	}
	if n := f.Timers(); n != 1 {
		t.Fatalf("%d timers pending, want 1", n)
	}
}

func TestFakeStopAndReset(t *testing.T) {
	f := NewFake(epoch)
	tm := f.NewTimer(time.Second)
	if !tm.Stop() {
		t.Fatal("Stop of a pending timer reported false")
	}
	if tm.Stop() {
		t.Fatal("second Stop reported true")
	}
	f.Advance(2 * time.Second)
	if _, ok := fired(tm); ok {
		t.Fatal("a stopped timer fired")
	}
	tm.Reset(time.Second)
	f.Advance(time.Second)
	if _, ok := fired(tm); !ok {
		t.Fatal("a reset timer did not fire")
	}
	if tm := f.NewTimer(0); true {
		if _, ok := fired(tm); !ok {
			t.Fatal("a zero timer must fire at once")
		}
	}
}

func TestFakeWaitTimersAndSleep(t *testing.T) {
	f := NewFake(epoch)
	done := make(chan bool)
	go func() { done <- Sleep(f, time.Minute, nil) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if next, ok := f.Next(); !ok || !next.Equal(epoch.Add(time.Minute)) {
		t.Fatalf("Next %v %v", next, ok)
	}
	f.Advance(time.Minute)
	if !<-done {
		t.Fatal("Sleep reported it was cut short")
	}
	stop := make(chan struct{})
	go func() { done <- Sleep(f, time.Minute, stop) }()
	if err := f.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	close(stop)
	if <-done {
		t.Fatal("Sleep reported the time passed after done closed")
	}
	if Since(f, epoch) != time.Minute {
		t.Fatal("Since")
	}
}
