package console

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"sync"
	"time"

	"github.com/certgate/certgate/api"
	"github.com/certgate/certgate/clock"
)

// session is one signed-in person: the token they signed in with, as
// the API would see it, and the form key of their pages.
type session struct {
	who     api.Identity
	csrf    string
	created time.Time
	seen    time.Time
}

// checkCSRF compares a form's token with the session's in constant time.
func (s session) checkCSRF(token string) bool {
	return token != "" && subtle.ConstantTimeCompare([]byte(token), []byte(s.csrf)) == 1
}

// sessionStore keeps the console's sessions by the cookie's value: in
// memory on this node (sessions), or sealed in the cookie itself so that
// every node holding the key opens it (sealedSessions).
type sessionStore interface {
	// start makes a session for who and returns the cookie's value.
	start(who api.Identity) (string, session)
	// get is the live session of a cookie's value, seen now; renewed,
	// when not empty, is the value the browser should keep from now on.
	get(value string) (s session, renewed string, ok bool)
	// end ends the session of a cookie's value, where that can be done.
	end(value string)
}

// sessions are kept in memory, by the SHA-256 of their id: the id itself
// lives only in the person's cookie, so a dump of this map signs nobody
// in. A session ends idle after idle, and maxAge after sign-in whatever
// its use; at most max are kept, and a sign-in past that ends the session
// idle longest.
type sessions struct {
	mu     sync.Mutex
	byHash map[[32]byte]*session
	clock  clock.Clock
	idle   time.Duration
	maxAge time.Duration
	max    int
}

func newSessions(c clock.Clock, idle, maxAge time.Duration, max int) *sessions {
	return &sessions{byHash: map[[32]byte]*session{}, clock: c, idle: idle, maxAge: maxAge, max: max}
}

// random is n random bytes, base64url.
func random(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand panics rather than return short)
	return base64.RawURLEncoding.EncodeToString(b)
}

// start makes a session for who and returns its id, for the cookie.
func (s *sessions) start(who api.Identity) (string, session) {
	id := random(32)
	now := s.clock.Now()
	sess := &session{who: who, csrf: random(32), created: now, seen: now}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.byHash) >= s.max {
		s.sweep(now)
	}
	for len(s.byHash) >= s.max {
		var oldest [32]byte
		var at time.Time
		for h, o := range s.byHash {
			if at.IsZero() || o.seen.Before(at) {
				oldest, at = h, o.seen
			}
		}
		delete(s.byHash, oldest)
	}
	s.byHash[sha256.Sum256([]byte(id))] = sess
	return id, *sess
}

// expired reports whether o has ended at now.
func (s *sessions) expired(o *session, now time.Time) bool {
	return now.Sub(o.seen) >= s.idle || now.Sub(o.created) >= s.maxAge
}

// sweep drops every session that has ended; called with mu held.
func (s *sessions) sweep(now time.Time) {
	for h, o := range s.byHash {
		if s.expired(o, now) {
			delete(s.byHash, h)
		}
	}
}

// get is the live session of id, seen now; false when there is none or
// it has ended (then it is gone). The id never changes.
func (s *sessions) get(id string) (session, string, bool) {
	if id == "" {
		return session{}, "", false
	}
	h := sha256.Sum256([]byte(id))
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.byHash[h]
	if !ok {
		return session{}, "", false
	}
	if s.expired(o, now) {
		delete(s.byHash, h)
		return session{}, "", false
	}
	o.seen = now
	return *o, "", true
}

// end deletes the session of id.
func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byHash, sha256.Sum256([]byte(id)))
}

// count is how many sessions are kept.
func (s *sessions) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byHash)
}
