package membudget

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestTryReserveRefusesWhatDoesNotFit(t *testing.T) {
	b := New(100)
	if !b.TryReserve(60) || !b.TryReserve(40) {
		t.Fatal("100 bytes in a budget of 100 refused")
	}
	if b.TryReserve(1) {
		t.Fatal("a byte over the budget was granted")
	}
	if !b.Full() {
		t.Fatal("a spent budget is not Full")
	}
	b.Release(40)
	if b.Full() || !b.TryReserve(40) {
		t.Fatal("released bytes were not given back")
	}
	if used, _ := b.InUse(); used != 100 {
		t.Fatalf("in use %d, want 100", used)
	}
}

// waitForWaiter returns once a Reserve call is waiting on b.
func waitForWaiter(t *testing.T, b *Budget) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		_, changed := b.InUse()
		if b.Waiting() > 0 {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatal("Reserve never waited")
		}
	}
}

func TestReserveWaitsAndTurnsSubmissionsAway(t *testing.T) {
	b := New(100)
	if !b.TryReserve(80) { // a submission under way
		t.Fatal("refused")
	}
	got := make(chan error, 1)
	go func() { got <- b.Reserve(context.Background(), 50) }() // a delivery
	waitForWaiter(t, b)
	// 20 bytes are free, but a delivery is waiting: new submissions
	// must not start, so that accepted mail goes out first.
	if !b.Full() {
		t.Fatal("a waiting delivery does not turn new submissions away")
	}
	select {
	case err := <-got:
		t.Fatalf("Reserve returned %v before there was room", err)
	default:
	}
	b.Release(80)
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if used, _ := b.InUse(); used != 50 {
		t.Fatalf("in use %d, want 50", used)
	}
	if b.Full() {
		t.Fatal("still Full with 50 of 100 used and nobody waiting")
	}
}

func TestReserveGrantsAnOversizeRequestWhenIdle(t *testing.T) {
	b := New(100)
	if err := b.Reserve(context.Background(), 500); err != nil {
		t.Fatalf("a request over the whole budget waits for ever: %v", err)
	}
	b.Release(500)
	if !b.TryReserve(1) {
		t.Fatal("the budget did not recover")
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan error, 1)
	go func() { got <- b.Reserve(ctx, 500) }()
	waitForWaiter(t, b)
	cancel()
	if err := <-got; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Reserve: %v", err)
	}
	if b.Full() {
		t.Fatal("a cancelled Reserve still counts as waiting")
	}
	if used, _ := b.InUse(); used != 1 {
		t.Fatalf("a cancelled Reserve took bytes: in use %d", used)
	}
}

func TestNilAndUnboundedBudgetsBoundNothing(t *testing.T) {
	var nilBudget *Budget
	if used, _ := nilBudget.InUse(); !nilBudget.TryReserve(1<<40) || nilBudget.Full() || nilBudget.Limit() != 0 || used != 0 || nilBudget.Waiting() != 0 || nilBudget.Reserve(context.Background(), 1<<40) != nil {
		t.Fatal("a nil budget bounded something")
	}
	nilBudget.Release(1 << 40)
	b := New(0)
	if !b.TryReserve(1<<40) || b.Full() {
		t.Fatal("an unbounded budget bounded something")
	}
}
