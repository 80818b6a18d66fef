package gateway

import (
	"errors"
	"fmt"

	"github.com/emersion/go-smtp"
)

// reply is a refusal the client sees: an SMTP code, an enhanced status code
// (RFC 3463) and a text a person understands. reason labels the metric.
type reply struct {
	code     int
	enhanced smtp.EnhancedCode
	text     string
	reason   string
}

func (r *reply) Error() string { return r.text }

// String is the reply as the client reads it.
func (r *reply) String() string {
	return fmt.Sprintf("%d %d.%d.%d %s", r.code, r.enhanced[0], r.enhanced[1], r.enhanced[2], r.text)
}

func newReply(code int, enhanced smtp.EnhancedCode, reason, text string) *reply {
	return &reply{code: code, enhanced: enhanced, text: text, reason: reason}
}

// The replies certgate gives. Codes follow RFC 5321 4.2.2 and enhanced codes
// RFC 3463.
var (
	// RFC 4954 6: 530 5.7.0 Authentication required.
	errAuthRequired = newReply(530, smtp.EnhancedCode{5, 7, 0}, "auth_required", "Authentication required")
	// RFC 4954 6: 538 5.7.11 when the mechanism needs TLS first.
	errEncryptionRequired = newReply(538, smtp.EnhancedCode{5, 7, 11}, "tls_required", "Encryption required for requested authentication mechanism")
	errTooManyRecipients  = newReply(452, smtp.EnhancedCode{4, 5, 3}, "recipients", "Too many recipients") // RFC 5321 4.5.3.1.10
	errNeedMail           = newReply(503, smtp.EnhancedCode{5, 5, 1}, "sequence", "MAIL FROM first")
	errSmuggling          = newReply(550, smtp.EnhancedCode{5, 6, 0}, "smuggling", "Message contains a bare CR or LF; lines must end in CRLF (RFC 5321 2.3.8)")
	errTooBig             = newReply(552, smtp.EnhancedCode{5, 3, 4}, "size", "Message exceeds the maximum size")
	errTempFail           = newReply(451, smtp.EnhancedCode{4, 3, 0}, "tempfail", "Temporary local problem, try again later")
	errShuttingDown       = newReply(421, smtp.EnhancedCode{4, 3, 2}, "shutdown", "Service shutting down, try again later")
	// A tenant's quotas (tenants[].max_message_rate, max_queued): the
	// client keeps its mail and retries, as with any 4xx.
	errTenantRate  = newReply(451, smtp.EnhancedCode{4, 7, 1}, "tenant_rate", "Message rate of this sender exceeded, try again later")
	errTenantQueue = newReply(452, smtp.EnhancedCode{4, 3, 1}, "tenant_queue", "Queue of this sender is full, try again later")
	// RFC 3463 X.3.1 mail system full: the memory budget (smtp.memory_budget).
	errMemoryBudget = newReply(452, smtp.EnhancedCode{4, 3, 1}, "memory", "Insufficient system resources, try again later")
	// A transaction that needs more than the whole budget would get 452
	// for ever: RFC 3463 X.3.4, and the client can split its recipients.
	errOverBudget = newReply(552, smtp.EnhancedCode{5, 3, 4}, "over_budget", "Message too large for this many recipients; send it to fewer at a time")
	errLongHeader = newReply(550, smtp.EnhancedCode{5, 6, 0}, "syntax", "A header line exceeds 998 octets (RFC 5322 2.1.1)")
	// RFC 3463 X.3.4. Preparing a message is linear in its header fields.
	errHeaderTooBig = newReply(552, smtp.EnhancedCode{5, 3, 4}, "size", fmt.Sprintf("Message header exceeds %d fields or %d KiB", maxHeaderFields, maxHeaderBytes>>10))

	// RFC 4954 6: 535 5.7.8 for bad credentials, 454 4.7.0 for a
	// temporary failure: too many failures from the client's address, or
	// no bcrypt slot free (a client should try again later, not give up).
	errAuthFailed = newReply(535, smtp.EnhancedCode{5, 7, 8}, "auth_failed", "Authentication failed")
	errAuthLimit  = newReply(454, smtp.EnhancedCode{4, 7, 0}, "auth_limit", "Too many failed authentications, try again later")
	errAuthBusy   = newReply(454, smtp.EnhancedCode{4, 7, 0}, "auth_busy", "Temporary authentication failure, try again later")
)

// Replies written outside a session (see server.go).
var (
	// RFC 5321 3.8, by the listener, before the greeting.
	errTooManyConnections = newReply(421, smtp.EnhancedCode{4, 7, 0}, "connections", "Too many connections, try again later")
	// go-smtp's own, after no command came in time (RFC 5321 4.5.3.2).
	errIdleTimeout = newReply(421, smtp.EnhancedCode{4, 4, 2}, "timeout", "Idle timeout, bye bye")
)

// Replies after which the session ends (see session.out).
var (
	// RFC 5321 4.5.3.1.9 ("500 Line too long"); X.5.6 is RFC 4954's code
	// for a line too long. Where the line ends is unknown, so the session
	// cannot go on.
	errLineTooLong = newReply(500, smtp.EnhancedCode{5, 5, 6}, "syntax", "Line too long, closing connection")
	// RFC 5321 4.5.3.2: the whole DATA transfer must fit in read_timeout.
	errDataTimeout = newReply(421, smtp.EnhancedCode{4, 4, 2}, "timeout", "Timeout reading the message, closing connection")
	// Like Postfix's smtpd_hard_error_limit.
	errTooManyErrors = newReply(421, smtp.EnhancedCode{4, 7, 0}, "errors", "Too many errors, closing connection")
)

// toSMTP is the one boundary every session error leaves through: go-smtp
// writes a *smtp.SMTPError as is, and anything else with its internal text
// under 554 (or 454 for AUTH), so whatever is not one of our replies
// becomes a bare generic temporary failure (session.out logs its cause).
func toSMTP(err error) error {
	if err == nil {
		return nil
	}
	r, _ := replyOf(err)
	return &smtp.SMTPError{Code: r.code, EnhancedCode: r.enhanced, Message: r.text}
}

// replyOf is the reply err becomes; internal: it is none of ours.
func replyOf(err error) (r *reply, internal bool) {
	if errors.As(err, &r) {
		return r, false
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return newReply(se.Code, se.EnhancedCode, "smtp", se.Message), false
	}
	return errTempFail, true
}
