package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
)

// secretFile judges who besides its owner may read or change the secret
// file name (at path), by its mode, as OpenSSH judges a private key.
// Open to every user of the machine, it is refused when refuseShared says
// why that is too much (a DKIM key, an API token), and warned about
// otherwise; open to its group, it is warned about: a group may be
// certgate's alone (root:certgate 0640), and check-config may run as
// another user than serve.
func (v *validator) secretFile(path, name, refuseShared string) {
	fi, err := os.Stat(name)
	if err != nil {
		return // v.file reported it
	}
	mode := fi.Mode().Perm()
	const fix = "chmod 600 it, owned by the user certgate runs as"
	switch {
	case mode&0o006 != 0:
		msg := fmt.Sprintf("%s has mode %04o: every user of this machine can %s it", name, mode, access(mode, 0o004, 0o002))
		if refuseShared != "" {
			v.add(path, "%s, and %s; %s", msg, refuseShared, fix)
		} else {
			v.warn(path, "%s; %s", msg, fix)
		}
	case mode&0o060 != 0:
		v.warn(path, "%s has mode %04o: its group can %s it; %s, unless that group is certgate's alone",
			name, mode, access(mode, 0o040, 0o020), fix)
	}
}

// access says what the read and write bits r and w of mode allow.
func access(mode os.FileMode, r, w os.FileMode) string {
	switch {
	case mode&r != 0 && mode&w != 0:
		return "read and change"
	case mode&w != 0:
		return "change"
	}
	return "read"
}

// ReadSecret returns a secret from a file or from an environment variable,
// whichever is named (exactly one must be), with surrounding white space
// (the final newline) trimmed. An empty secret is an error. Errors name the
// file or the variable, never the value.
func ReadSecret(file, env string) (string, error) {
	switch {
	case file != "" && env != "":
		return "", errors.New("secret: name a file or an environment variable, not both")
	case file != "":
		data, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("secret file %s: %v", file, pathErrText(err))
		}
		s := strings.TrimSpace(string(data))
		if s == "" {
			return "", fmt.Errorf("secret file %s is empty", file)
		}
		return s, nil
	case env != "":
		val, ok := os.LookupEnv(env)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", env)
		}
		s := strings.TrimSpace(val)
		if s == "" {
			return "", fmt.Errorf("environment variable %s is empty", env)
		}
		return s, nil
	}
	return "", errors.New("secret: neither a file nor an environment variable is named")
}

// DSN returns the PostgreSQL connection string from dsn_file or dsn_env.
func (s Storage) DSN() (string, error) { return ReadSecret(s.DSNFile, s.DSNEnv) }

// Password returns the smarthost password from password_file or password_env.
func (a RouteAuth) Password() (string, error) { return ReadSecret(a.PasswordFile, a.PasswordEnv) }

// Token returns the bearer token from token_file or token_env.
func (t APIToken) Token() (string, error) { return ReadSecret(t.TokenFile, t.TokenEnv) }

// HasScope reports whether the token holds scope; admin holds every scope.
func (t APIToken) HasScope(scope Scope) bool {
	return slices.Contains(t.Scopes, scope) || slices.Contains(t.Scopes, ScopeAdmin)
}

// ReadPasswordHash returns the user's bcrypt hash: password_hash, or the
// trimmed contents of password_hash_file.
func (u User) ReadPasswordHash() (string, error) {
	if u.PasswordHash != "" {
		return u.PasswordHash, nil
	}
	if u.PasswordHashFile == "" {
		return "", fmt.Errorf("user %s has neither password_hash nor password_hash_file", u.Username)
	}
	return ReadSecret(u.PasswordHashFile, "")
}

// Proxies returns trusted_proxies parsed; entries that do not parse
// (Validate reports them) are left out.
func (h HTTP) Proxies() []netip.Prefix { return parseNetworks(h.TrustedProxies) }

// Networks returns scanner_networks parsed; entries that do not parse
// (Validate reports them) are left out.
func (g Gate) Networks() []netip.Prefix { return parseNetworks(g.ScannerNetworks) }

// Networks returns trusted_networks parsed; entries that do not parse
// (Validate reports them) are left out.
func (t Tenant) Networks() []netip.Prefix { return parseNetworks(t.TrustedNetworks) }

func parseNetworks(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range list {
		if p, err := parseNetwork(n); err == nil {
			out = append(out, p)
		}
	}
	return out
}
