package storetest

import (
	"context"
	"crypto/sha256"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/store"
)

func idempotency(t *testing.T, s store.Store) store.Idempotency {
	t.Helper()
	if c, ok := s.(*closeOnce); ok {
		s = c.Store
	}
	id, ok := s.(store.Idempotency)
	if !ok {
		t.Fatalf("%T does not implement store.Idempotency", s)
	}
	return id
}

// testIdempotencyKeys: a key is claimed once; until its answer is stored a
// second reservation sees it under way, then sees the answer; a forgotten
// claim and an expired key are claimed anew; expired keys are deleted.
func testIdempotencyKeys(t *testing.T, s store.Store) {
	ix := idempotency(t, s)
	ctx := context.Background()
	h1, h2 := sha256.Sum256([]byte("one")), sha256.Sum256([]byte("two"))
	exp := base.Add(24 * time.Hour)
	c, err := ix.ReserveKey(ctx, "tok\x00k1", h1, base, exp)
	if err != nil || !c.Claimed {
		t.Fatalf("first ReserveKey = %+v, %v; want claimed", c, err)
	}
	c, err = ix.ReserveKey(ctx, "tok\x00k1", h2, base.Add(time.Second), exp)
	if err != nil || c.Claimed || c.BodyHash != h1 || c.Status != 0 || c.Response != nil || !c.Expires.Equal(exp) {
		t.Fatalf("ReserveKey under way = %+v, %v; want the first claim, no answer", c, err)
	}
	if err := ix.RememberKey(ctx, "tok\x00k1", 202, []byte(`{"id":"x"}`)); err != nil {
		t.Fatal(err)
	}
	c, err = ix.ReserveKey(ctx, "tok\x00k1", h1, base.Add(time.Minute), exp)
	if err != nil || c.Claimed || c.Status != 202 || string(c.Response) != `{"id":"x"}` {
		t.Fatalf("ReserveKey answered = %+v, %v; want the stored answer", c, err)
	}
	// The same key of another caller is another key.
	if c, err := ix.ReserveKey(ctx, "other\x00k1", h1, base, exp); err != nil || !c.Claimed {
		t.Fatalf("another scope's key = %+v, %v; want claimed", c, err)
	}
	// A forgotten claim is free again; an answered key is not forgotten.
	if err := ix.ForgetKey(ctx, "other\x00k1"); err != nil {
		t.Fatal(err)
	}
	if c, err := ix.ReserveKey(ctx, "other\x00k1", h2, base, exp); err != nil || !c.Claimed {
		t.Fatalf("after ForgetKey = %+v, %v; want claimed", c, err)
	}
	if err := ix.ForgetKey(ctx, "tok\x00k1"); err != nil {
		t.Fatal(err)
	}
	if c, _ := ix.ReserveKey(ctx, "tok\x00k1", h1, base, exp); c.Claimed || c.Status != 202 {
		t.Fatalf("ForgetKey dropped an answered key: %+v", c)
	}
	// Past its expiry a key is claimed anew.
	if c, err := ix.ReserveKey(ctx, "tok\x00k1", h2, exp, exp.Add(24*time.Hour)); err != nil || !c.Claimed || c.Status != 0 {
		t.Fatalf("expired key = %+v, %v; want claimed anew", c, err)
	}
	// Deleting: only what expired before the time, at most limit.
	for _, k := range []string{"a", "b", "c"} {
		if _, err := ix.ReserveKey(ctx, "old\x00"+k, h1, base, base.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := ix.DeleteExpiredKeys(ctx, base.Add(2*time.Hour), 2); err != nil || n != 2 {
		t.Fatalf("DeleteExpiredKeys = %d, %v; want 2", n, err)
	}
	if n, err := ix.DeleteExpiredKeys(ctx, base.Add(2*time.Hour), 10); err != nil || n != 1 {
		t.Fatalf("DeleteExpiredKeys = %d, %v; want the last 1", n, err)
	}
	if c, _ := ix.ReserveKey(ctx, "tok\x00k1", h1, base, exp); c.Claimed {
		t.Fatal("DeleteExpiredKeys deleted a key that has not expired")
	}
}

// testIdempotencyConcurrent: of many calls reserving one key at once,
// exactly one claims it.
func testIdempotencyConcurrent(t *testing.T, s store.Store) {
	ix := idempotency(t, s)
	h := sha256.Sum256([]byte("body"))
	const n = 20
	var wg sync.WaitGroup
	claims := make(chan bool, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := ix.ReserveKey(context.Background(), "tok\x00race", h, base, base.Add(time.Hour))
			if err != nil {
				t.Error(err)
			}
			claims <- c.Claimed
		}()
	}
	wg.Wait()
	close(claims)
	got := 0
	for c := range claims {
		if c {
			got++
		}
	}
	if got != 1 {
		t.Fatalf("%d of %d concurrent reservations claimed the key; want 1", got, n)
	}
}
