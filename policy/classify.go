package policy

// Outcome is what a delivery attempt's result means for the message.
type Outcome int

const (
	// Delivered: the receiver took responsibility for the message.
	Delivered Outcome = iota
	// Deferred: try again later, following the retry schedule.
	Deferred
	// Bounced: permanent failure; send a delivery status notification.
	Bounced
)

func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case Deferred:
		return "deferred"
	case Bounced:
		return "bounced"
	}
	return "unknown"
}

// Classify maps the final reply of a delivery attempt to an outcome, after
// RFC 5321 section 4.2.1 (the first digit of a reply code: 2 positive
// completion, 4 transient negative completion, 5 permanent negative
// completion) and section 4.5.4 (a transient failure is retried, a
// permanent one is returned to the sender).
//
// netErr is true when the attempt got no reply at all (connection refused
// or dropped, timeout, TLS failure); the message may still be delivered on
// another try, so that is Deferred whatever code says. Codes outside 2xx,
// 4xx and 5xx (a 1xx or 3xx where a final reply belongs, or garbage) are a
// broken exchange rather than a refusal, and are Deferred too: bouncing
// certificate mail on an unclear signal is the worse error.
func Classify(code int, netErr bool) Outcome {
	if netErr {
		return Deferred
	}
	switch {
	case code >= 200 && code <= 299:
		return Delivered
	case code >= 500 && code <= 599:
		return Bounced
	}
	return Deferred
}
