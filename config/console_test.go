package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConsole: the console's session limits, their defaults, and what is
// refused.
func TestConsole(t *testing.T) {
	f := newFixture(t)
	if got := mustParse(t, f, minimalYAML).Console; got != DefaultConsole() ||
		got.IdleTimeout != Duration(30*time.Minute) || got.MaxAge != Duration(12*time.Hour) || got.MaxSessions != 1000 {
		t.Errorf("console left out = %+v, want 30m idle, 12h in all, 1000 sessions", got)
	}
	got := mustParse(t, f, minimalYAML+"console: {idle_timeout: 10m, max_age: 8h, max_sessions: 50}\n").Console
	if got != (Console{IdleTimeout: Duration(10 * time.Minute), MaxAge: Duration(8 * time.Hour), MaxSessions: 50}) {
		t.Errorf("console set = %+v", got)
	}
	code := &Config{}
	code.SetDefaults()
	if code.Console != DefaultConsole() {
		t.Errorf("SetDefaults: console %+v", code.Console)
	}
	for _, c := range []struct{ yaml, want string }{
		{"{idle_timeout: 10s}", "console.idle_timeout: must be from 1m to 24h, not 10s"},
		{"{idle_timeout: 0}", "console.idle_timeout: must be from 1m to 24h"},
		{"{max_age: 48h}", "console.max_age: must be from 1m to 24h, not 48h"},
		{"{idle_timeout: 2h, max_age: 1h}", "console.max_age: 1h0m0s is shorter than console.idle_timeout (2h0m0s)"},
		{"{max_sessions: 0}", "console.max_sessions: must be from 1 to 100000, not 0"},
		{"{max_sessions: -3}", "console.max_sessions: must be from 1 to 100000"},
		{"{idle: 10m}", `unknown key "idle"`},
	} {
		_, err := Parse(f.path(), []byte(f.expand(minimalYAML+"console: "+c.yaml+"\n")))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("console: %s: %v, want %q", c.yaml, err, c.want)
		}
	}
}

// TestConsoleSessionKeyFile: the shared session key is found beside the
// configuration, and refused when missing, short or open to every user.
func TestConsoleSessionKeyFile(t *testing.T) {
	f := newFixture(t)
	write := func(name, text string, mode os.FileMode) {
		t.Helper()
		p := filepath.Join(f.dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
	}
	write("session.key", strings.Repeat("ab", 32)+"\n", 0o600)
	write("short.key", strings.Repeat("k", 31)+"\n", 0o600)
	write("open.key", strings.Repeat("k", 64), 0o644)
	if got := mustParse(t, f, minimalYAML).Console.SessionKeyFile; got != "" {
		t.Errorf("session_key_file left out = %q, want none (sessions in memory)", got)
	}
	if got := mustParse(t, f, minimalYAML+"console: {session_key_file: session.key}\n").Console.SessionKeyFile; got != filepath.Join(f.dir, "session.key") {
		t.Errorf("session_key_file = %q, want it beside the configuration", got)
	}
	for _, c := range []struct{ file, want string }{
		{"nope.key", "console.session_key_file: file"},
		{"short.key", "console.session_key_file: must hold at least 32 characters of random key"},
		{"open.key", "every user of this machine can read it, and the console's session key signs anyone in"},
	} {
		_, err := Parse(f.path(), []byte(f.expand(minimalYAML+"console: {session_key_file: "+c.file+"}\n")))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("session_key_file %s: %v, want %q", c.file, err, c.want)
		}
	}
}
