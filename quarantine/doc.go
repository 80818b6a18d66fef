// Package quarantine owns the safety state of certificate mail: which mail
// is held, what release and revoke do (Desk), and the gated download links
// that only open once a message is safe (Rewriter, Gate). It sends nothing
// itself, neither mail nor HTTP requests: the gateway asks it to rewrite
// links while preparing a copy and tells it when a copy is delivered;
// package api calls the Desk; package webhook reports what it recorded.
package quarantine
