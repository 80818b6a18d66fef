package console

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"io"
	"time"

	"github.com/certgate/certgate/api"
	"github.com/certgate/certgate/clock"
)

// MinSessionKey is the least length of Options.SessionKey, as config
// requires of console.session_key_file.
const MinSessionKey = 32

// The sealed cookie: base64url (unpadded, strict) of
//
//	version (1) | nonce (12) | AES-256-GCM(payload) with the version and
//	the cookie's name as additional data
//
// and the payload
//
//	created (8, Unix seconds) | seen (8, Unix seconds) | session id (32) |
//	token tag (16) | token name (the rest)
const (
	sealVersion  = 1
	sidLen       = 32
	tagLen       = 16
	payloadFixed = 8 + 8 + sidLen + tagLen
	// maxSealed bounds a cookie value before anything is decoded: a
	// browser keeps 4 KiB a cookie.
	maxSealed = 4096
	// reissueAfter: a request re-seals the cookie with a new seen time
	// at most this often, so that a busy page does not set it each time.
	reissueAfter = time.Minute
)

// sealedSessions keep each session in its own cookie, sealed with a key
// every node of a cluster reads from the same file, so any node opens
// it. Nothing is kept here: max_sessions does not apply, and a session
// cannot be ended before its time but by taking its token out of the
// configuration (its name no longer finds one) or giving the token a
// new secret (the tag no longer matches).
type sealedSessions struct {
	aead   cipher.AEAD
	mac    []byte // keys the form keys and token tags
	tokens *api.Tokens
	clock  clock.Clock
	idle   time.Duration
	maxAge time.Duration
	// nonces is crypto/rand's reader; a fuzz test makes sealing
	// repeatable in each of its processes.
	nonces io.Reader
}

// sealed is a cookie's payload.
type sealed struct {
	created, seen time.Time
	sid           [sidLen]byte
	tag           [tagLen]byte
	name          string
}

// newSealed derives the sealing and MAC keys from key with HKDF-SHA256,
// each under its own label, so neither is the file's text itself.
func newSealed(key []byte, tokens *api.Tokens, c clock.Clock, idle, maxAge time.Duration) *sealedSessions {
	derive := func(label string) []byte {
		k, err := hkdf.Key(sha256.New, key, nil, "certgate console session "+label, 32)
		if err != nil { // only for a length HKDF-SHA256 cannot give
			panic(err)
		}
		return k
	}
	block, err := aes.NewCipher(derive("seal v1"))
	if err != nil {
		panic(err) // 32 bytes is always an AES key
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return &sealedSessions{aead: aead, mac: derive("mac v1"), tokens: tokens, clock: c, idle: idle, maxAge: maxAge, nonces: rand.Reader}
}

var sealEncoding = base64.RawURLEncoding.Strict()

// additional binds the ciphertext to its version and to this cookie.
func additional() []byte { return append([]byte{sealVersion}, cookieName...) }

func (s *sealedSessions) hmac(parts ...[]byte) []byte {
	m := hmac.New(sha256.New, s.mac)
	for _, p := range parts {
		m.Write(p)
	}
	return m.Sum(nil)
}

// tokenTag binds a session to its token's secret, not only its name.
func (s *sealedSessions) tokenTag(who api.Identity) (tag [tagLen]byte) {
	d := who.SecretDigest()
	copy(tag[:], s.hmac([]byte("token"), d[:]))
	return tag
}

// csrf is a session's form key: HMAC-SHA256("csrf" || session id), the
// same on every node, and no use to any other session.
func (s *sealedSessions) csrf(sid [sidLen]byte) string {
	return base64.RawURLEncoding.EncodeToString(s.hmac([]byte("csrf"), sid[:]))
}

func (s *sealedSessions) seal(p sealed) string {
	plain := make([]byte, payloadFixed, payloadFixed+len(p.name))
	binary.BigEndian.PutUint64(plain[0:], uint64(p.created.Unix()))
	binary.BigEndian.PutUint64(plain[8:], uint64(p.seen.Unix()))
	copy(plain[16:], p.sid[:])
	copy(plain[16+sidLen:], p.tag[:])
	plain = append(plain, p.name...)
	out := make([]byte, 1+s.aead.NonceSize(), 1+s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	out[0] = sealVersion
	if _, err := io.ReadFull(s.nonces, out[1:]); err != nil {
		panic(err) // crypto/rand never fails
	}
	out = s.aead.Seal(out, out[1:], plain, additional())
	return sealEncoding.EncodeToString(out)
}

// open is the payload of a cookie this key sealed; false for anything
// else, whatever its length or content.
func (s *sealedSessions) open(value string) (sealed, bool) {
	if len(value) > maxSealed || !base64URL(value) {
		return sealed{}, false
	}
	raw, err := sealEncoding.DecodeString(value)
	ns := s.aead.NonceSize()
	if err != nil || len(raw) < 1+ns+s.aead.Overhead() || raw[0] != sealVersion {
		return sealed{}, false
	}
	plain, err := s.aead.Open(nil, raw[1:1+ns], raw[1+ns:], additional())
	if err != nil || len(plain) <= payloadFixed {
		return sealed{}, false
	}
	p := sealed{
		created: time.Unix(int64(binary.BigEndian.Uint64(plain[0:])), 0),
		seen:    time.Unix(int64(binary.BigEndian.Uint64(plain[8:])), 0),
		name:    string(plain[payloadFixed:]),
	}
	copy(p.sid[:], plain[16:])
	copy(p.tag[:], plain[16+sidLen:])
	return p, true
}

// base64URL: only the unpadded base64url alphabet, since the decoder
// skips line breaks, and one sealing must have one spelling.
func base64URL(v string) bool {
	for _, c := range []byte(v) {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func (s *sealedSessions) start(who api.Identity) (string, session) {
	now := time.Unix(s.clock.Now().Unix(), 0) // what the cookie keeps
	p := sealed{created: now, seen: now, tag: s.tokenTag(who), name: who.Name}
	rand.Read(p.sid[:])
	return s.seal(p), session{who: who, csrf: s.csrf(p.sid), created: now, seen: now}
}

func (s *sealedSessions) get(value string) (session, string, bool) {
	p, ok := s.open(value)
	if !ok {
		return session{}, "", false
	}
	now := s.clock.Now()
	if now.Sub(p.seen) >= s.idle || now.Sub(p.created) >= s.maxAge {
		return session{}, "", false
	}
	// The token as configured now: its scopes and tenants of today, and
	// none when it was taken out or given a new secret.
	who, ok := s.tokens.Named(p.name)
	if want := s.tokenTag(who); !ok || !hmac.Equal(p.tag[:], want[:]) {
		return session{}, "", false
	}
	renewed := ""
	if now.Sub(p.seen) >= reissueAfter {
		p.seen = time.Unix(now.Unix(), 0)
		renewed = s.seal(p)
	}
	return session{who: who, csrf: s.csrf(p.sid), created: p.created, seen: p.seen}, renewed, true
}

// end can do nothing: the handler clears the cookie, and a copy of it
// lives until its idle timeout (see docs/console.md).
func (s *sealedSessions) end(string) {}
