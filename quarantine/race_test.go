//go:build race

package quarantine

// raceEnabled: the race detector slows the pure-Go SQLite several times
// over, so the heaviest tests send fewer requests under it.
const raceEnabled = true
