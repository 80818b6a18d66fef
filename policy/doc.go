// Package policy owns every decision about how fast and how often certgate
// delivers: which receiving provider a recipient domain belongs to (by
// domain, then by MX host), the lane that provider's mail queues in, every
// limit the queue obeys (the rate, the connection limit, deliveries per
// connection, the cap after a refused connection), the retry schedule and
// when to give up, how an SMTP reply is classified, and how a lane reacts
// to a receiver's throttling replies.
//
// The queue asks policy every question about limits and decides none
// itself. Policy never talks SMTP or IMAP: it sees reply codes, MX host
// names and timestamps, and counts connection slots without ever holding a
// connection. It takes configuration that
// package config has already validated and merged
// (config.ResolveProviders) and checks none of it again.
//
// The Limiter interface is the seam for a cluster (issue 14): it holds
// the state that lanes of the same key on every node must share, the
// rate's reservations and the connection slots. LocalLimiter serves one
// process; a Redis implementation can serve several nodes without a
// change to lanes or their callers. A lane's reactions (throttling
// backoff, the concurrency cap) stay in its process.
package policy
