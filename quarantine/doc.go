// Package quarantine owns the safety state of certificate mail: which mail
// is held, what release did, and the gated download links that only open
// once a message is safe. It never sends mail itself: the gateway asks it
// to rewrite links while preparing a copy, and tells it when a copy is
// delivered.
package quarantine
