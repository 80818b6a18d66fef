// Package policy owns every decision about how fast and how often certgate
// delivers: which receiving provider a recipient domain belongs to (by
// domain, then by MX host), the lane that provider's mail queues in, the
// message classes and their priority inside a lane, the rate and connection
// limits of each lane, the retry schedule and when to give up, how an SMTP
// reply is classified, and how a lane reacts to a receiver's throttling
// replies.
//
// The gateway's queue runner asks policy every question about limits and
// decides none itself. Policy never talks SMTP or IMAP: it sees reply codes,
// MX host names and timestamps, never connections.
package policy
