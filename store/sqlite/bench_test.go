package sqlite

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/certgate/certgate/store"
)

// BenchmarkEnqueueParallel measures durable enqueues of 20 KB messages from
// many concurrent callers, as SMTP sessions would make them: every Enqueue
// waits for its fsync, shared through group commit. It reports msgs/s and
// the mean batch size (reqs/commit).
func BenchmarkEnqueueParallel(b *testing.B) {
	benchEnqueue(b, 1, 32)
}

// BenchmarkEnqueueParallelTenRecipients is a bulk-wave message: one body
// shared by ten recipients with their own prefixes.
func BenchmarkEnqueueParallelTenRecipients(b *testing.B) {
	benchEnqueue(b, 10, 32)
}

// BenchmarkEnqueueSerial is one caller at a time: no batching, one fsync per
// message. The gap to the parallel figure is what group commit buys.
func BenchmarkEnqueueSerial(b *testing.B) {
	benchEnqueue(b, 1, 0)
}

// BenchmarkRecordAttemptParallel measures the other hot write: final
// delivery results from many concurrent deliveries, each of which also
// drops its message's 20 KB body.
func BenchmarkRecordAttemptParallel(b *testing.B) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), benchOptions())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body := make([]byte, 20*1024)
	// Enqueue the recipients first, concurrently, untimed.
	rids := make([]int64, b.N)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < b.N; i = int(next.Add(1)) - 1 {
				id := fmt.Sprintf("ra-%d", i)
				ids, err := s.Enqueue(context.Background(), store.Message{ID: id, Class: "bulk", ReceivedAt: time.Now()},
					[][]byte{body}, []store.NewRecipient{{Address: "u@example.com", TrackingID: id, State: store.StateQueued}})
				if err != nil {
					b.Error(err)
					return
				}
				rids[i] = ids[0]
			}
		})
	}
	wg.Wait()
	before := s.Stats()
	next.Store(0)
	b.SetParallelism(32)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			err := s.RecordAttempt(context.Background(), store.Attempt{
				RecipientID: rids[i], Time: time.Now(), State: store.StateDelivered, Provider: "gmail",
				Host: "gmail-smtp-in.l.google.com", Code: 250, Reply: "2.0.0 OK 1700000000 abc.123 - gsmtp",
			})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	st := s.Stats()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "attempts/s")
	if c := st.Commits - before.Commits; c > 0 {
		b.ReportMetric(float64(st.Requests-before.Requests)/float64(c), "reqs/commit")
	}
}

// benchOptions lets a run compare page sizes without editing code:
// CERTGATE_BENCH_PAGE_SIZE=4096 go test -bench . ./store/sqlite/
func benchOptions() Options {
	ps, _ := strconv.Atoi(os.Getenv("CERTGATE_BENCH_PAGE_SIZE"))
	return Options{PageSize: ps}
}

// benchEnqueue runs b.N enqueues with parallelism*GOMAXPROCS callers, or
// one caller when parallelism is 0.
func benchEnqueue(b *testing.B, rcpts, parallelism int) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "bench.db"), benchOptions())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/\r\n"), 20*1024/66)
	var seq atomic.Int64
	enqueue := func() error {
		id := fmt.Sprintf("bench-%d", seq.Add(1))
		rs := make([]store.NewRecipient, rcpts)
		for i := range rs {
			rs[i] = store.NewRecipient{
				Address:    fmt.Sprintf("user%d@example.com", i),
				TrackingID: fmt.Sprintf("%s/%d", id, i),
				Prefix:     []byte(fmt.Sprintf("X-Certgate-Tracking: %s/%d\r\nMessage-ID: <%s.%d@relay.issuer.example>\r\n", id, i, id, i)),
				State:      store.StateQueued,
			}
		}
		m := store.Message{ID: id, Tenant: "issuer", Class: "bulk", Size: int64(len(body)),
			ClientAddr: "192.0.2.1", AuthUser: "app", ReceivedAt: time.Now()}
		_, err := s.Enqueue(context.Background(), m, [][]byte{body}, rs)
		return err
	}

	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	start := time.Now()
	if parallelism == 0 {
		for b.Loop() {
			if err := enqueue(); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		b.SetParallelism(parallelism)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := enqueue(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	elapsed := time.Since(start)
	b.StopTimer()
	st := s.Stats()
	b.ReportMetric(float64(seq.Load())/elapsed.Seconds(), "msgs/s")
	if st.Commits > 0 {
		b.ReportMetric(float64(st.Requests)/float64(st.Commits), "reqs/commit")
	}
}
