package main

// The store failing under the daemon, on real file systems the test mounts
// as data_dir: a tmpfs that fills up (TestCrashDiskFull), and an ext4 image
// that turns read-only on an error, as ext4 does when its disk fails
// (TestCrashStoreWriteError). Both need root to mount; without it they skip,
// or fail under CERTGATE_E2E=1.

import (
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func init() {
	// For requireTool's message when one is missing.
	e2eToolPackages["mount"] = "mount"
	e2eToolPackages["umount"] = "mount"
	e2eToolPackages["mkfs.ext4"] = "e2fsprogs"
	e2eToolPackages["e2fsck"] = "e2fsprogs"
}

// crashMount mounts a file system on dir with mount(8) arguments and
// unmounts it when the test ends; a machine where that is impossible (no
// root, no CAP_SYS_ADMIN in a container) skips the test, or fails it under
// CERTGATE_E2E=1. The caller starts the daemon after this, so that the
// daemon is stopped before the unmount.
func crashMount(t *testing.T, dir string, args ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		e2eMissing(t, "mounting a file system for data_dir needs root")
	}
	umount := requireTool(t, "umount")
	if out, err := crashMountNow(t, dir, args...); err != nil {
		e2eMissing(t, "cannot mount a file system here (%v: %s); the test needs root with CAP_SYS_ADMIN",
			err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if !crashMounted(dir) {
			return
		}
		if out, code, err := e2eExec(time.Minute, umount, dir); err != nil || code != 0 {
			t.Errorf("umount %s: exit %d %v: %s; detaching it lazily", dir, code, err, out)
			e2eExec(time.Minute, umount, "-l", dir)
		}
	})
}

// crashMountNow runs mount(8) with args and dir.
func crashMountNow(t *testing.T, dir string, args ...string) ([]byte, error) {
	t.Helper()
	mount := requireTool(t, "mount")
	out, code, err := e2eExec(time.Minute, mount, append(args, dir)...)
	if err == nil && code != 0 {
		err = fmt.Errorf("mount %s %s: exit %d", strings.Join(args, " "), dir, code)
	}
	return out, err
}

// crashMountSource returns the device mounted on dir ("" if none), from
// /proc/self/mounts.
func crashMountSource(dir string) string {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return ""
	}
	source := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[1] == dir {
			source = f[0] // the last mount on dir is the visible one
		}
	}
	return source
}

func crashMounted(dir string) bool { return crashMountSource(dir) != "" }

// crashSubmitOne submits one message on a connection of its own.
func crashSubmitOne(r *crashRig, ledger *crashLedger, m crashMsg) error {
	s, err := dialCrashSMTP(r.smtpAddr.Load().(string))
	if err != nil {
		return err
	}
	defer s.close()
	err = s.send(m)
	ledger.note(m, err)
	return err
}

// warmUp starts the daemon, submits ten messages and waits until they are
// delivered.
func (r *crashRig) warmUp(ledger *crashLedger, run string, rng *rand.Rand) {
	r.t.Helper()
	r.start()
	crashSubmitAll(r.t, r, ledger, run, 0, 10, rng)
	if missing := r.waitDrained(ledger, time.Minute); len(missing) > 0 {
		r.t.FailNow()
	}
}

// alive checks that the daemon process runs and answers /healthz.
func (r *crashRig) alive() error {
	select {
	case <-r.proc.done:
		return fmt.Errorf("certgate serve exited: %v", r.proc.waitErr)
	default:
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + r.httpAddr + "/healthz")
	if err != nil {
		return fmt.Errorf("GET /healthz: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /healthz: %s", resp.Status)
	}
	return nil
}

// crashDiskUsage describes dir's file system and files, for failure reports.
func crashDiskUsage(dir string) string {
	var b strings.Builder
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil {
		fmt.Fprintf(&b, "%s: %d KiB free of %d KiB;", dir, st.Bavail*uint64(st.Bsize)>>10, st.Blocks*uint64(st.Bsize)>>10)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			fmt.Fprintf(&b, " %s %d B;", e.Name(), fi.Size())
		}
	}
	return b.String()
}

// crashIntegrity runs SQLite's integrity_check on the stopped daemon's
// database.
func crashIntegrity(t *testing.T, dataDir string) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dataDir, "certgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var res string
	if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil || res != "ok" {
		t.Errorf("integrity_check of the database: %q %v, want ok", res, err)
	}
}

// TestCrashDiskFull runs the daemon on a 64 MiB tmpfs, fills the file system
// while it runs, and checks that submissions then get 451 4.3.0 (never 250,
// never a 5xx), that the daemon keeps running, and that once space is freed
// it accepts again, delivers everything it acknowledged, and restarts on an
// intact database.
func TestCrashDiskFull(t *testing.T) {
	e2eStart(t)
	seed := crashSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	dataDir := t.TempDir()
	crashMount(t, dataDir, "-t", "tmpfs", "-o", "size=64m,mode=0700", "certgate-crash-test")
	r := newCrashRig(t, seed, dataDir)
	ledger := newCrashLedger()
	run := fmt.Sprintf("full%x", seed)
	r.warmUp(ledger, run, rng)

	// Deliveries in flight as the disk fills: the sink holds them, and
	// their delivery records will find no room.
	r.sink.maxDelay.Store(int64(time.Second))
	crashSubmitAll(t, r, ledger, run, 1, 4, rng)
	for wait := time.Now().Add(30 * time.Second); len(r.sink.inFlight()) == 0; {
		if time.Now().After(wait) {
			t.Fatalf("no delivery reached the sink within 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Fill the file system to the last block.
	filler := filepath.Join(dataDir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	filled := 0
	for {
		n, err := f.Write(chunk)
		filled += n
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatalf("filling %s: %v", dataDir, err)
		}
	}
	f.Close()
	t.Logf("full: %s", crashDiskUsage(dataDir))

	// Full: four clients at once, so that refusals share the writer's
	// batches. Every answer is 451 4.3.0, or 250 while SQLite still finds
	// room in the pages it has; each client stops after three refusals.
	var mu sync.Mutex
	refusals, acks := 0, 0
	var wg sync.WaitGroup
	for w := 2; w < 6; w++ {
		wrng := rand.New(rand.NewPCG(seed, uint64(w)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := 0
			for i := 0; i < 20 && mine < 3; i++ {
				m := newCrashMsg(run, w, i, wrng)
				err := crashSubmitOne(r, ledger, m)
				mu.Lock()
				switch c := crashReplyClass(err); c {
				case "250":
					acks++
				case "451 4.3.0":
					refusals++
					mine++
				default:
					t.Errorf("submission %s on a full disk: %s (%v), want 451 4.3.0", m.ID, c, err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if refusals == 0 {
		t.Errorf("no 451 4.3.0 on a full disk (%d acknowledged)", acks)
	}
	// The held deliveries end while the disk is still full; their records
	// find no room, so the queue keeps them (retrying the write) rather
	// than forget them and send them again after a restart.
	for wait := time.Now().Add(time.Minute); len(r.sink.inFlight()) > 0; {
		if time.Now().After(wait) {
			t.Fatalf("deliveries still held at the sink a minute after the disk filled")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := r.alive(); err != nil {
		t.Fatalf("the daemon on a full disk: %v", err)
	}
	r.sink.maxDelay.Store(0)

	// Space again: the writer recovers and accepts.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	recovered := false
	for i := 0; i < 50 && !recovered; i++ {
		m := newCrashMsg(run, 6, i, rng)
		err := crashSubmitOne(r, ledger, m)
		recovered = err == nil
		if !recovered {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if !recovered {
		t.Fatalf("no 250 after the disk had space again (replies: %s); %s", ledger.replySummary(), crashDiskUsage(dataDir))
	}
	t.Logf("space again: %s", crashDiskUsage(dataDir))
	crashSubmitAll(t, r, ledger, run, 7, 10, rng)
	r.waitDrained(ledger, time.Minute)
	if _, err := r.terminate(45 * time.Second); err != nil {
		t.Errorf("certgate serve exited with %v after SIGTERM, want status 0", err)
	}
	crashIntegrity(t, dataDir)
	// A delivery whose record failed on the full disk was recorded once
	// there was room again; only one still unrecorded at shutdown is
	// resent by the restart.
	log := crashLogSince(r.logPath, nil)
	recordFailures := strings.Count(log, "attempt not recorded")
	t.Logf("the daemon's first store errors:\n%s\n%s", crashFirstLine(log, "smtp session: internal error"), crashFirstLine(log, "queue: recording attempt"))
	r.start()
	r.waitDrained(ledger, time.Minute)

	c := tallyCrash(ledger, r.sink.copies())
	t.Logf("filled %d KiB; on the full disk %d refused with 451 4.3.0, %d acknowledged; replies: %s",
		filled>>10, refusals, acks, ledger.replySummary())
	t.Logf("acknowledged %d messages (%d copies), the sink stored %d: %d lost, %d duplicates (%d failed writes of delivery records retried), %d of unacknowledged messages",
		c.acked, c.ackedCopies, c.stored, len(c.lost), c.duplicates, strings.Count(log, "queue: recording attempt; retrying"), c.unacked)
	if len(c.lost) > 0 {
		t.Errorf("acknowledged copies never delivered: %s", strings.Join(crashFirst(c.lost, 20), ", "))
	}
	if c.duplicates > recordFailures {
		t.Errorf("%d duplicates, more than the %d deliveries left unrecorded at shutdown", c.duplicates, recordFailures)
	}
	if c.unacked > 0 {
		t.Errorf("%d copies of messages refused with 451 were delivered anyway", c.unacked)
	}
}

// crashFirstLine returns the first line of log that holds substr.
func crashFirstLine(log, substr string) string {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, substr) {
			return line
		}
	}
	return "(no line with " + strconv.Quote(substr) + ")"
}

// TestCrashStoreWriteError runs the daemon on an ext4 image mounted with
// errors=remount-ro and makes the file system fail under it (ext4's
// trigger_fs_error, the path a disk error takes): every submission must get
// 451 4.3.0 and none 250, the daemon must keep running, and after the
// file system is checked and mounted again every acknowledged message is
// delivered, none twice.
func TestCrashStoreWriteError(t *testing.T) {
	e2eStart(t)
	seed := crashSeed(t)
	rng := rand.New(rand.NewPCG(seed, 0))
	mkfs := requireTool(t, "mkfs.ext4")
	fsck := requireTool(t, "e2fsck")
	image := filepath.Join(t.TempDir(), "data.ext4")
	if err := os.WriteFile(image, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(image, 32<<20); err != nil {
		t.Fatal(err)
	}
	if out, code, err := e2eExec(time.Minute, mkfs, "-q", "-F", image); err != nil || code != 0 {
		t.Fatalf("mkfs.ext4: exit %d %v\n%s", code, err, out)
	}
	dataDir := t.TempDir()
	mountArgs := []string{"-t", "ext4", "-o", "loop,errors=remount-ro", image}
	crashMount(t, dataDir, mountArgs...)
	dev := filepath.Base(crashMountSource(dataDir))
	trigger := filepath.Join("/sys/fs/ext4", dev, "trigger_fs_error")
	if _, err := os.Stat(trigger); err != nil {
		e2eMissing(t, "this kernel has no %s to make ext4 fail: %v", trigger, err)
	}
	r := newCrashRig(t, seed, dataDir)
	ledger := newCrashLedger()
	run := fmt.Sprintf("eio%x", seed)
	r.warmUp(ledger, run, rng)

	if err := os.WriteFile(trigger, []byte("certgate crash test"), 0o200); err != nil {
		t.Fatalf("writing %s: %v", trigger, err)
	}
	// Recent kernels mark it emergency_ro: writes fail with EROFS, although
	// statfs does not say read-only.
	if err := os.WriteFile(filepath.Join(dataDir, "probe"), nil, 0o600); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("ext4 still takes writes after the error: %v", err)
	}
	for i := range 5 {
		m := newCrashMsg(run, 1, i, rng)
		err := crashSubmitOne(r, ledger, m)
		if c := crashReplyClass(err); c != "451 4.3.0" {
			t.Errorf("submission %s after the store's file system failed: %s (%v), want 451 4.3.0", m.ID, c, err)
		}
	}
	if err := r.alive(); err != nil {
		t.Fatalf("the daemon after the store's file system failed: %v", err)
	}
	took, err := r.terminate(45 * time.Second)
	log := crashLogSince(r.logPath, nil)
	t.Logf("SIGTERM on the failed file system: exit %v after %v; the daemon's first store error:\n%s",
		err, took.Round(time.Millisecond), crashFirstLine(log, "smtp session: internal error"))

	// The operator's repair: unmount, check, mount again, restart.
	umount := requireTool(t, "umount")
	if out, code, err := e2eExec(time.Minute, umount, dataDir); err != nil || code != 0 {
		t.Fatalf("umount: exit %d %v\n%s", code, err, out)
	}
	if out, code, err := e2eExec(2*time.Minute, fsck, "-f", "-y", image); err != nil || code > 1 {
		t.Fatalf("e2fsck: exit %d %v\n%s", code, err, out)
	}
	if out, err := crashMountNow(t, dataDir, mountArgs...); err != nil {
		t.Fatalf("mounting the checked file system again: %v\n%s", err, out)
	}
	r.start()
	crashSubmitAll(t, r, ledger, run, 2, 5, rng)
	r.waitDrained(ledger, time.Minute)
	if _, err := r.terminate(45 * time.Second); err != nil {
		t.Errorf("certgate serve exited with %v after SIGTERM, want status 0", err)
	}
	crashIntegrity(t, dataDir)

	c := tallyCrash(ledger, r.sink.copies())
	t.Logf("replies: %s; acknowledged %d messages (%d copies), the sink stored %d: %d lost, %d duplicates, %d of unacknowledged messages",
		ledger.replySummary(), c.acked, c.ackedCopies, c.stored, len(c.lost), c.duplicates, c.unacked)
	if len(c.lost) > 0 {
		t.Errorf("acknowledged copies never delivered: %s", strings.Join(crashFirst(c.lost, 20), ", "))
	}
	if c.duplicates > 0 {
		t.Errorf("copies delivered twice: %s", strings.Join(c.dupKeys, ", "))
	}
	if c.unacked > 0 {
		t.Errorf("%d copies of messages refused with 451 were delivered anyway", c.unacked)
	}
}
