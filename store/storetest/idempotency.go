package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
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

// answered enqueues a one-recipient message that answers key.
func answered(t *testing.T, s store.Store, key string, hash [32]byte, response string, exp time.Time) (string, error) {
	t.Helper()
	id := newID("idem")
	m := message(id)
	m.Idempotency = &store.IdempotentAnswer{Key: key, BodyHash: hash, Status: 202, Response: []byte(response), Expires: exp}
	_, err := s.Enqueue(context.Background(), m, [][]byte{[]byte("Subject: hi\r\n\r\nbody\r\n")},
		[]store.NewRecipient{rcpt(id, "ana@example.com", 0, store.StateQueued)})
	return id, err
}

// testIdempotencyKeys: a key is claimed once; until the Enqueue of its
// message answers it a second reservation sees it under way, then sees
// the answer; a forgotten claim and an expired key are claimed anew;
// expired keys are deleted.
func testIdempotencyKeys(t *testing.T, s store.Store) {
	ix := idempotency(t, s)
	ctx := context.Background()
	h1, h2 := sha256.Sum256([]byte("one")), sha256.Sum256([]byte("two"))
	// The claim is held a while; the answer, which replaces its expiry,
	// a day.
	lease, exp := base.Add(5*time.Minute), base.Add(24*time.Hour)
	c, err := ix.ReserveKey(ctx, "tok\x00k1", h1, base, lease)
	if err != nil || !c.Claimed {
		t.Fatalf("first ReserveKey = %+v, %v; want claimed", c, err)
	}
	c, err = ix.ReserveKey(ctx, "tok\x00k1", h2, base.Add(time.Second), lease)
	if err != nil || c.Claimed || c.BodyHash != h1 || c.Status != 0 || c.Response != nil || !c.Expires.Equal(lease) {
		t.Fatalf("ReserveKey under way = %+v, %v; want the first claim, no answer", c, err)
	}
	if _, err := answered(t, s, "tok\x00k1", h1, `{"id":"x"}`, exp); err != nil {
		t.Fatal(err)
	}
	c, err = ix.ReserveKey(ctx, "tok\x00k1", h1, lease.Add(time.Minute), exp)
	if err != nil || c.Claimed || c.Status != 202 || string(c.Response) != `{"id":"x"}` || !c.Expires.Equal(exp) {
		t.Fatalf("ReserveKey answered past the claim's expiry = %+v, %v; want the stored answer until %v", c, err, exp)
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

// testIdempotencyAnswerWithMessage: Enqueue answers a key only over its
// own claim, and the message and the answer are stored together or not
// at all: a message that fails leaves the key claimed without an answer
// (ForgetKey frees it), one over a key not its own stores nothing.
func testIdempotencyAnswerWithMessage(t *testing.T, s store.Store) {
	ix := idempotency(t, s)
	ctx := context.Background()
	h1, h2 := sha256.Sum256([]byte("one")), sha256.Sum256([]byte("two"))
	exp := base.Add(24 * time.Hour)
	notStored := func(what, id string, err error) {
		t.Helper()
		if !errors.Is(err, store.ErrKeyNotClaimed) {
			t.Fatalf("%s: Enqueue = %v; want ErrKeyNotClaimed", what, err)
		}
		if _, err := s.Message(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s: the message was stored (%v)", what, err)
		}
	}
	// A key never claimed.
	id, err := answered(t, s, "tok\x00none", h1, `{"id":"a"}`, exp)
	notStored("a key never claimed", id, err)
	if c, err := ix.ReserveKey(ctx, "tok\x00none", h2, base, exp); err != nil || !c.Claimed {
		t.Fatalf("after the refused Enqueue the key is %+v, %v; want free", c, err)
	}
	// A key claimed with another body.
	id, err = answered(t, s, "tok\x00none", h1, `{"id":"a"}`, exp)
	notStored("a key claimed with another body", id, err)
	if c, _ := ix.ReserveKey(ctx, "tok\x00none", h1, base, exp); c.Claimed || c.Status != 0 || c.BodyHash != h2 {
		t.Fatalf("the other body's claim became %+v", c)
	}
	// A key answered already: the first answer stays.
	if c, err := ix.ReserveKey(ctx, "tok\x00k", h1, base, exp); err != nil || !c.Claimed {
		t.Fatalf("ReserveKey = %+v, %v", c, err)
	}
	first, err := answered(t, s, "tok\x00k", h1, `{"id":"first"}`, exp)
	if err != nil {
		t.Fatal(err)
	}
	if v := view(t, s, first); len(v.Recipients) != 1 || len(v.Events) != 1 {
		t.Fatalf("the answered message: %d recipients, %d events", len(v.Recipients), len(v.Events))
	}
	id, err = answered(t, s, "tok\x00k", h1, `{"id":"second"}`, exp)
	notStored("a key answered already", id, err)
	if c, _ := ix.ReserveKey(ctx, "tok\x00k", h1, base, exp); c.Status != 202 || string(c.Response) != `{"id":"first"}` {
		t.Fatalf("the answer became %+v", c)
	}
	// A message that fails (its id is taken) does not answer its key,
	// and the freed key is claimed again.
	if c, err := ix.ReserveKey(ctx, "tok\x00dup", h1, base, exp); err != nil || !c.Claimed {
		t.Fatalf("ReserveKey = %+v, %v", c, err)
	}
	m := message(first)
	m.Idempotency = &store.IdempotentAnswer{Key: "tok\x00dup", BodyHash: h1, Status: 202, Response: []byte("{}"), Expires: exp}
	if _, err := s.Enqueue(ctx, m, [][]byte{[]byte("again")}, []store.NewRecipient{rcpt(first+"-again", "x@example.com", 0, store.StateQueued)}); err == nil {
		t.Fatal("Enqueue with a taken message id succeeded")
	}
	if c, _ := ix.ReserveKey(ctx, "tok\x00dup", h1, base, exp); c.Claimed || c.Status != 0 || c.Response != nil {
		t.Fatalf("a failed Enqueue left its key %+v; want claimed, no answer", c)
	}
	if err := ix.ForgetKey(ctx, "tok\x00dup"); err != nil {
		t.Fatal(err)
	}
	if c, err := ix.ReserveKey(ctx, "tok\x00dup", h2, base, exp); err != nil || !c.Claimed {
		t.Fatalf("after ForgetKey = %+v, %v; want claimed", c, err)
	}
	// An answer without a key or a status is refused before anything.
	for _, a := range []store.IdempotentAnswer{{BodyHash: h1, Status: 202}, {Key: "tok\x00dup", BodyHash: h2}} {
		m := message(newID("idem"))
		m.Idempotency = &a
		if _, err := s.Enqueue(ctx, m, [][]byte{[]byte("x")}, []store.NewRecipient{rcpt(m.ID, "x@example.com", 0, store.StateQueued)}); err == nil {
			t.Fatalf("Enqueue with answer %+v succeeded", a)
		}
	}
}
