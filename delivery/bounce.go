package delivery

import (
	"context"
	"fmt"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
)

// Sealer signs a DSN as the reporting host, when a DKIM key aligns with
// that host name (the gateway's preparer does it, with the keys it signs
// submissions with); it returns the DSN unchanged otherwise.
type Sealer interface {
	SealDSN(dsn []byte) ([]byte, error)
}

// bounce sends an RFC 3464 DSN for a failed recipient to its envelope
// sender, from the null sender so that it can never bounce in turn (RFC
// 5321 4.5.5), and queues it like any accepted mail. original is the copy
// as sent, if it is at hand; only its header is quoted.
func (q *Queue) bounce(p store.Pending, res Result, original []byte) error {
	ctx := context.Background()
	if original == nil {
		original, _ = q.store.Data(ctx, p.RecipientID)
	}
	now := q.clock.Now()
	id := store.NewMessageID(now)
	dsn := buildDSN(dsnInput{
		ReportingMTA: q.hostname, QueueID: id, OriginalID: p.MessageID, Sender: p.MailFrom,
		Recipient: p.Address, RemoteMTA: res.Host, Status: dsnStatus(res), Diagnostic: res.String(), GaveUp: res.GaveUp, NoReply: res.Code == 0,
		Arrival: p.ReceivedAt, Now: now, Original: original,
	})
	content := dsn
	if q.sealer != nil {
		var err error
		if content, err = q.sealer.SealDSN(dsn); err != nil {
			return err
		}
	}
	m := store.Message{ID: id, Tenant: p.Tenant, MailFrom: "", HeaderFrom: "MAILER-DAEMON@" + q.hostname,
		MessageID: id + "@" + q.hostname, Subject: "Undelivered Mail Returned to Sender",
		Class: string(config.ClassTransactional), Size: int64(len(content)), ReceivedAt: now}
	contents := [][]byte{content}
	rcpts := []store.NewRecipient{store.NewCopy(p.MailFrom, store.StateQueued, now)}
	ids, err := q.store.Enqueue(ctx, m, contents, rcpts)
	if err != nil {
		return err
	}
	q.AddAccepted(store.QueuedCopies(m, contents, rcpts, ids))
	q.metrics.DSNSent.Inc()
	return q.store.AddEvent(ctx, store.Event{MessageID: p.MessageID, RecipientID: p.RecipientID, Time: now, Kind: "dsn",
		Actor: "queue", Detail: fmt.Sprintf("DSN %s sent to %s for %s", id, p.MailFrom, p.Address)})
}
