package sqlite

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/certgate/certgate/store"
)

// The crash test runs this test binary again as a child that writes until it
// is killed. These variables carry its instructions.
const (
	crashDBEnv  = "CERTGATE_STORE_CRASH_DB"
	crashRunEnv = "CERTGATE_STORE_CRASH_RUN"
	ackPrefix   = "acked "
)

// crashMessage derives everything about a crash-test message from its id, so
// the parent can check what it reads back without hearing it from the child.
func crashMessage(id string) (store.Message, [][]byte, []store.NewRecipient) {
	line := []byte("certificate download for " + id + "\r\n")
	contents := [][]byte{
		bytes.Repeat(line, 20*1024/len(line)), // about 20 KB, like a real mail
		[]byte("Subject: short copy of " + id + "\r\n\r\nhi\r\n"),
	}
	var rs []store.NewRecipient
	for i, addr := range []string{"a@example.com", "b@example.org", "c@example.net"} {
		rs = append(rs, store.NewRecipient{
			Address:    addr,
			TrackingID: id + "/" + strconv.Itoa(i),
			Prefix:     []byte("X-Certgate-Tracking: " + id + "/" + strconv.Itoa(i) + "\r\n"),
			Content:    i / 2, // a and b share the big body
			State:      store.StateQueued,
		})
	}
	m := store.Message{ID: id, Tenant: "issuer", Class: "bulk", Size: int64(len(contents[0])), ClientAddr: "192.0.2.1"}
	return m, contents, rs
}

// TestCrashChild is not a test on its own: TestCrashRecovery runs it in a
// child process, which enqueues concurrently and prints each id only after
// Enqueue returned nil, until it is killed.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashDBEnv)
	if path == "" {
		t.Skip("helper process for TestCrashRecovery")
	}
	run := os.Getenv(crashRunEnv)
	s, err := Open(context.Background(), path, Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var mu sync.Mutex
	for w := range 32 {
		go func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("crash-%s-%d-%d", run, w, i)
				m, contents, rs := crashMessage(id)
				if _, err := s.Enqueue(context.Background(), m, contents, rs); err != nil {
					fmt.Fprintln(os.Stderr, "enqueue:", err)
					os.Exit(2)
				}
				// One write per line, unbuffered: the parent reads only
				// what this process finished acknowledging.
				mu.Lock()
				os.Stdout.WriteString(ackPrefix + id + "\n")
				mu.Unlock()
			}
		}()
	}
	select {} // until killed
}

// TestCrashRecovery kills a writing child with SIGKILL at random moments and
// checks that every message it acknowledged survived, with all its
// recipients and bytes. It reuses one database across the kills, so each
// round also recovers on top of an earlier recovery.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns child processes")
	}
	if os.Getenv(crashDBEnv) != "" {
		t.Skip("inside the child")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	total := 0
	for run := range 4 {
		acked, stderr := runCrashChild(t, path, run)
		if len(acked) == 0 {
			t.Fatalf("run %d: child acknowledged nothing; stderr:\n%s", run, stderr)
		}
		total += len(acked)
		t.Logf("run %d: killed after %d acknowledged messages", run, len(acked))
		verifyAcked(t, path, acked)
	}
	t.Logf("%d acknowledged messages survived %d kills", total, 4)
}

// runCrashChild starts the child, kills it at a random moment once it has
// acknowledged something, and returns every id it acknowledged.
func runCrashChild(t *testing.T, path string, run int) ([]string, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDBEnv+"="+path, crashRunEnv+"="+strconv.Itoa(run))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1024)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if id, ok := strings.CutPrefix(sc.Text(), ackPrefix); ok {
				lines <- id
			}
		}
	}()

	var acked []string
	// The first ack proves the child is past Open and writing; then let it
	// run for a random while so the kill lands anywhere in a batch.
	first, ok := <-lines
	if !ok {
		cmd.Wait()
		return nil, stderr.String()
	}
	acked = append(acked, first)
	deadline := time.After(time.Duration(rand.IntN(400)+10) * time.Millisecond)
collect:
	for {
		select {
		case id, ok := <-lines:
			if !ok {
				break collect
			}
			acked = append(acked, id)
		case <-deadline:
			break collect
		}
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no Close, no flush
		t.Fatal(err)
	}
	// Whatever the child printed before it died was acknowledged too.
	for id := range lines {
		acked = append(acked, id)
	}
	err = cmd.Wait()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("run %d: child ended with %v before the kill; stderr:\n%s", run, err, stderr.String())
	}
	return acked, stderr.String()
}

func verifyAcked(t *testing.T, path string, acked []string) {
	t.Helper()
	ctx := context.Background()
	s, err := Open(ctx, path, Options{})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	var check string
	if err := s.rdb.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check = %q, %v", check, err)
	}
	for _, id := range acked {
		v, err := s.Message(ctx, id)
		if err != nil {
			t.Fatalf("acknowledged message %s lost: %v", id, err)
		}
		_, contents, rs := crashMessage(id)
		if len(v.Recipients) != len(rs) {
			t.Fatalf("message %s has %d recipients, want %d", id, len(v.Recipients), len(rs))
		}
		for i, r := range v.Recipients {
			if r.Address != rs[i].Address || r.TrackingID != rs[i].TrackingID || r.State != store.StateQueued {
				t.Fatalf("message %s recipient %d = %+v", id, i, r)
			}
			data, err := s.Data(ctx, r.ID)
			if err != nil {
				t.Fatalf("message %s recipient %d: %v", id, i, err)
			}
			want := append(append([]byte{}, rs[i].Prefix...), contents[rs[i].Content]...)
			if !bytes.Equal(data, want) {
				t.Fatalf("message %s recipient %d: %d bytes differ from the %d enqueued", id, i, len(data), len(want))
			}
		}
		if len(v.Events) != 1 || v.Events[0].Kind != "accepted" {
			t.Fatalf("message %s events = %+v", id, v.Events)
		}
	}
}
