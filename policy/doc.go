// Package policy owns every decision about how fast and how often certgate
// delivers: which receiving provider a recipient domain belongs to (by
// domain, then by MX host), the lane that provider's mail queues in, the
// rate and connection limits of each lane, the retry schedule and when to
// give up, how an SMTP reply is classified, and how a lane reacts to a
// receiver's throttling replies.
//
// The queue asks policy every question about limits and decides none
// itself. Policy never talks SMTP or IMAP: it sees reply codes, MX host
// names and timestamps, never connections. It takes configuration that
// package config has already validated and merged
// (config.ResolveProviders) and checks none of it again.
//
// The Limiter interface is the seam for a cluster (issue 14): it holds
// the state that lanes of the same key on every node must share, the
// rate's reservations. LocalLimiter serves one process; a Redis
// implementation can serve several nodes without a change to lanes or
// their callers. A lane's reaction to throttling stays in its process.
package policy
