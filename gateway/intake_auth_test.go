package gateway

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/certgate/certgate/config"
	"golang.org/x/crypto/bcrypt"
)

// Outsiders flooding AUTH (issue 9, item 6).

// hashGate stands in for bcrypt in a test's directory: it counts the
// comparisons, notes how many run at once, and, while held, keeps those of
// a wrong password waiting.
type hashGate struct {
	mu      sync.Mutex
	calls   int
	running int
	atGood  int           // most comparisons running while the right password was compared
	hold    chan struct{} // non-nil: wrong passwords wait for it to close
	holdAll bool          // right ones too
	changed chan struct{}
}

func (g *hashGate) compare(hash, password []byte) error {
	good := string(password) == testPassword
	g.mu.Lock()
	g.calls++
	g.running++
	if good {
		g.atGood = max(g.atGood, g.running)
	}
	hold, all := g.hold, g.holdAll
	g.notify()
	g.mu.Unlock()
	if hold != nil && (!good || all) {
		<-hold
	}
	err := bcrypt.CompareHashAndPassword(hash, password)
	g.mu.Lock()
	g.running--
	g.notify()
	g.mu.Unlock()
	return err
}

func (g *hashGate) notify() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// close makes wrong passwords wait (all of them with all); open lets them
// all go.
func (g *hashGate) close(all bool) {
	g.mu.Lock()
	g.hold, g.holdAll = make(chan struct{}), all
	g.mu.Unlock()
}

func (g *hashGate) open() {
	g.mu.Lock()
	if g.hold != nil {
		close(g.hold)
		g.hold = nil
	}
	g.mu.Unlock()
}

func (g *hashGate) stats() (calls, running, atGood int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls, g.running, g.atGood
}

// waitRunning waits until n comparisons are running.
func (g *hashGate) waitRunning(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		g.mu.Lock()
		running, changed := g.running, g.changed
		g.mu.Unlock()
		if running == n {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("%d bcrypt comparisons running, want %d", running, n)
		}
	}
}

// Past auth_failure_limit failures an address is refused at once with
// 454 4.7.0, without bcrypt, even with the right password (RFC 4954 6);
// other addresses are not.
func TestAuthFailureBudget(t *testing.T) {
	env := newEnv(t, envOptions{})
	in := newIntake(t, env, ServerConfig{AuthFailureLimit: 3, AuthFailureWindow: time.Hour})
	r := in.greeted("127.0.5.1")
	for i := 0; i < 3; i++ {
		r.cmd("AUTH PLAIN "+b64("\x00app\x00guess"), "535 5.7.8")
	}
	calls, _, _ := in.hash.stats()
	r.cmd("AUTH PLAIN "+b64("\x00app\x00guess"), "454 4.7.0")
	r.cmd("AUTH PLAIN "+b64("\x00app\x00"+testPassword), "454 4.7.0")
	r.cmd("AUTH PLAIN "+b64("\x00nobody\x00guess"), "454 4.7.0")
	if now, _, _ := in.hash.stats(); now != calls {
		t.Errorf("%d bcrypt comparisons for AUTH past the budget", now-calls)
	}
	in.greeted("127.0.5.2").authPlain()
}

// bcrypt runs in at most auth_concurrency slots. An AUTH that finds none
// free waits its turn behind at most hashQueue others per slot; past that
// it is refused at once with 454 4.7.0 rather than queued.
func TestAuthConcurrencyIsBounded(t *testing.T) {
	env := newEnv(t, envOptions{})
	in := newIntake(t, env, ServerConfig{AuthConcurrency: 2, AuthFailureLimit: 5, AuthFailureWindow: time.Hour})
	in.hash.close(false)
	const running, waiting, refused = 2, 2 * hashQueue, 2
	replies := in.authFrom(t, "127.0.6.%d", running+waiting+refused, "app", "guess%d")
	for i := 0; i < refused; i++ {
		if got := <-replies; !strings.HasPrefix(got, "454 4.7.0") {
			t.Errorf("reply %q with every slot taken and the queue full, want 454 4.7.0", got)
		}
	}
	in.hash.waitRunning(t, running)
	in.hash.open()
	for i := 0; i < running+waiting; i++ {
		if got := <-replies; !strings.HasPrefix(got, "535 5.7.8") {
			t.Errorf("reply %q, want 535 5.7.8", got)
		}
	}
}

// authFrom sends AUTH PLAIN from n addresses at once, and returns their
// replies as they come. "%d" in addr and password stands for 1 to n.
func (in *intake) authFrom(t *testing.T, addr string, n int, user, password string) <-chan string {
	replies := make(chan string, n)
	for i := 1; i <= n; i++ {
		r := in.greeted(strings.ReplaceAll(addr, "%d", strconv.Itoa(i)))
		fmt.Fprintf(r.c, "AUTH PLAIN %s\r\n", b64("\x00"+user+"\x00"+strings.ReplaceAll(password, "%d", strconv.Itoa(i))))
		go func() {
			reply, err := r.reply(10 * time.Second)
			if err != nil {
				reply = err.Error()
			}
			replies <- reply
		}()
	}
	return replies
}

// Logins with one credential at once (an MTA opening several connections)
// share one bcrypt: none waits for a slot, none is refused for want of one.
func TestConcurrentLoginsShareOneBcrypt(t *testing.T) {
	env := newEnv(t, envOptions{})
	in := newIntake(t, env, ServerConfig{AuthConcurrency: 1, AuthFailureLimit: 5, AuthFailureWindow: time.Hour})
	const n = 2 + hashQueue
	joined := make(chan struct{}, n)
	in.dir.joined = func() { joined <- struct{}{} }
	in.hash.close(true)
	replies := in.authFrom(t, "127.0.2.%d", n, "app2", testPassword)
	in.hash.waitRunning(t, 1)
	for i := 1; i < n; i++ {
		select {
		case <-joined:
		case got := <-replies:
			t.Fatalf("reply %q before the first bcrypt ended", got)
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d logins share the bcrypt under way", i-1, n-1)
		}
	}
	in.hash.open()
	for i := 0; i < n; i++ {
		if got := <-replies; !strings.HasPrefix(got, "235") {
			t.Errorf("reply %q, want 235", got)
		}
	}
	if calls, _, _ := in.hash.stats(); calls != 1 {
		t.Errorf("%d bcrypt comparisons for one credential", calls)
	}
}

// An AUTH flood from many addresses does not hold up a good login: a
// cached credential needs no bcrypt, and addresses that have failed before
// leave a slot free for those that have not. The bound is on the bcrypt
// comparisons running while the good one runs, not on the clock.
func TestAuthFloodDoesNotDelayGoodLogin(t *testing.T) {
	env := newEnv(t, envOptions{})
	in := newIntake(t, env, ServerConfig{AuthConcurrency: 2, AuthFailureLimit: 5, AuthFailureWindow: time.Hour})
	in.greeted("127.0.2.1").authPlain() // app's credential is now cached
	const attackers = 40
	var rs []*raw
	for i := 1; i <= attackers; i++ {
		r := in.greeted(fmt.Sprintf("127.0.7.%d", i))
		r.cmd("AUTH PLAIN "+b64("\x00app\x00guess"), "535 5.7.8")
		rs = append(rs, r)
	}

	// The flood: every attacker again, at once, with bcrypt held. They
	// have failed, so they may take one slot of two, and wait behind it.
	in.hash.close(false)
	replies := make(chan string, attackers)
	for i, r := range rs {
		fmt.Fprintf(r.c, "AUTH PLAIN %s\r\n", b64(fmt.Sprintf("\x00app\x00guess%d", i)))
		go func() {
			reply, err := r.reply(10 * time.Second)
			if err != nil {
				reply = err.Error()
			}
			replies <- reply
		}()
	}
	const inBcrypt, waiting = 1, 2 * hashQueue
	for i := 0; i < attackers-inBcrypt-waiting; i++ {
		if got := <-replies; !strings.HasPrefix(got, "454 4.7.0") {
			t.Fatalf("attacker got %q while the slots are taken, want 454 4.7.0", got)
		}
	}
	in.hash.waitRunning(t, inBcrypt)

	// A cached login and a first login both get in during the flood.
	in.greeted("127.0.2.2").authPlain()
	good := in.greeted("127.0.2.3")
	good.cmd("AUTH PLAIN "+b64("\x00app2\x00"+testPassword), "235")
	if _, _, atGood := in.hash.stats(); atGood > 2 {
		t.Errorf("%d bcrypt comparisons ran alongside the good login's, want at most 2", atGood)
	}
	in.hash.open()
	for i := 0; i < inBcrypt+waiting; i++ {
		if got := <-replies; !strings.HasPrefix(got, "535 5.7.8") {
			t.Errorf("an attacker in bcrypt or waiting got %q, want 535 5.7.8", got)
		}
	}
}

// The dummy hash unknown users are checked against costs what the dearest
// user's does, so that the time taken does not tell who exists.
func TestDummyHashCostsAsMuchAsUsers(t *testing.T) {
	var users []config.User
	for i, cost := range []int{bcrypt.MinCost, bcrypt.MinCost + 2, bcrypt.MinCost + 1} {
		h, err := bcrypt.GenerateFromPassword([]byte(testPassword), cost)
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, config.User{Username: fmt.Sprintf("u%d", i), PasswordHash: string(h)})
	}
	dir, err := NewDirectory([]config.Tenant{{Name: "t", FromDomains: []string{"ca.example"}, Users: users}}, "https://gate.ca.example")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := bcrypt.Cost(dir.dummy); err != nil || got != bcrypt.MinCost+2 {
		t.Fatalf("dummy hash cost %d (%v), want %d", got, err, bcrypt.MinCost+2)
	}
}

// A failed AUTH is logged with a known user's name, but an unknown name
// (a password typed into the wrong field, say) only as a short hash.
func TestAuthFailureLogsNoTypedSecret(t *testing.T) {
	env := newEnv(t, envOptions{})
	in := newIntake(t, env, ServerConfig{AuthFailureLimit: 10, AuthFailureWindow: time.Hour})
	const typed = "Tr0ub4dor&3-typed-as-user"
	r := in.greeted("127.0.2.1")
	r.cmd("AUTH PLAIN "+b64("\x00"+typed+"\x00x"), "535 5.7.8")
	r.cmd("AUTH LOGIN "+b64(typed), "334")
	r.cmd(b64("x"), "535 5.7.8")
	r.cmd("AUTH PLAIN "+b64("\x00app\x00wrong"), "535 5.7.8")
	failed := in.logs.wait(t, "three failed AUTH", 3, refusal("535 5.7.8", "127.0.2.1"))
	if failed[2].attrs["user"] != "app" {
		t.Errorf("a known user's failure logged %v, want user=app", failed[2])
	}
	if u := failed[0].attrs["user"]; u == "" || u != failed[1].attrs["user"] {
		t.Errorf("an unknown user logged as %q and %q, want the same short hash", u, failed[1].attrs["user"])
	}
	for _, rec := range in.logs.find(func(logRecord) bool { return true }) {
		if strings.Contains(rec.String(), typed) || strings.Contains(rec.String(), typed[:8]) {
			t.Errorf("the typed user name is in the log: %v", rec)
		}
	}
}
