package config

import (
	"fmt"
	"regexp"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Password hash costs. Each step doubles the work of checking a password,
// for certgate and for whoever guesses at a stolen hash; certgate pays it
// once per client (verified credentials are cached).
const (
	// MinBcryptCost is the least cost that draws no warning.
	MinBcryptCost = 10
	// DefaultBcryptCost is what certgate passwd uses: about a quarter of a
	// second on one core.
	DefaultBcryptCost = 12
)

// htpasswdLine is a line of an htpasswd file: user:hash.
var htpasswdLine = regexp.MustCompile(`^([^:$\s]+):(\$.*)$`)

// PasswordHashProblem says why h will not do as a password_hash (problem),
// or, when it will, what is weak about it (warning); both "" for a sound
// hash. Neither echoes the hash.
func PasswordHashProblem(h string) (problem, warning string) {
	const how = " (certgate passwd makes one)"
	if m := htpasswdLine.FindStringSubmatch(h); m != nil {
		p, w := PasswordHashProblem(m[2])
		if p == "" {
			p = fmt.Sprintf("this is an htpasswd line, user:hash; keep only the hash, what follows %q", m[1]+":")
			if w != "" {
				p += "; and " + w
			}
		}
		return p, ""
	}
	for prefix, name := range map[string]string{"$apr1$": "Apache's MD5 (htpasswd -m)", "$1$": "MD5-crypt", "$5$": "SHA-256-crypt", "$6$": "SHA-512-crypt", "{SHA}": "SHA-1 (htpasswd -s)"} {
		if strings.HasPrefix(h, prefix) {
			return "this is " + name + ", not bcrypt; certgate takes bcrypt hashes only" + how, ""
		}
	}
	if !strings.HasPrefix(h, "$2a$") && !strings.HasPrefix(h, "$2b$") && !strings.HasPrefix(h, "$2y$") {
		return "not a bcrypt hash: it must start with $2a$, $2b$ or $2y$" + how, ""
	}
	if len(h) != 60 {
		return fmt.Sprintf("not a bcrypt hash: it must be 60 characters long, not %d", len(h)), ""
	}
	cost, err := bcrypt.Cost([]byte(h))
	if err != nil {
		return "not a valid bcrypt hash: " + strings.TrimPrefix(err.Error(), "crypto/bcrypt: ") + how, ""
	}
	if cost < MinBcryptCost {
		return "", fmt.Sprintf("bcrypt cost %d is below %d: a stolen hash is guessed %d times faster than at %d; make a new one with certgate passwd (cost %d)",
			cost, MinBcryptCost, 1<<(MinBcryptCost-cost), MinBcryptCost, DefaultBcryptCost)
	}
	return "", ""
}
