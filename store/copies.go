package store

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"time"
)

// TrackingHeader carries each copy's TrackingID. It is added outside the
// DKIM signature, in the copy's Prefix, so one signature serves every
// recipient of a message.
const TrackingHeader = "X-Certgate-Tracking-ID"

var idEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// NewMessageID returns a 26-character message id: 48 bits of milliseconds,
// so that ids sort by time (Query.After pages by it), then 80 random bits.
func NewMessageID(now time.Time) string {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	rand.Read(b[6:])
	return idEncoding.EncodeToString(b[:])
}

// NewCopy is the record of one recipient's copy: a tracking id of 128
// random bits (unguessable, unique per copy), the TrackingHeader line that
// carries it as the copy's Prefix, in state, first due at now.
func NewCopy(address string, state State, now time.Time) NewRecipient {
	var b [16]byte
	rand.Read(b[:])
	tid := idEncoding.EncodeToString(b[:])
	return NewRecipient{Address: address, TrackingID: tid, Prefix: []byte(TrackingHeader + ": " + tid + "\r\n"),
		State: state, NextAttempt: now}
}

// Copy is a queued recipient just made durable, with its bytes: what a
// queue runner needs to send it without reading it back.
type Copy struct {
	Pending
	Prefix, Body []byte
}

// QueuedCopies lists the queued recipients of a message that Enqueue has
// just stored (ids are its result), in recipient order; held ones wait for
// release and are left out.
func QueuedCopies(m Message, contents [][]byte, rcpts []NewRecipient, ids []int64) []Copy {
	out := make([]Copy, 0, len(ids))
	for i, id := range ids {
		rc := rcpts[i]
		if rc.State != StateQueued {
			continue
		}
		out = append(out, Copy{
			Pending: Pending{RecipientID: id, MessageID: m.ID, Tenant: m.Tenant, MailFrom: m.MailFrom, Address: rc.Address,
				Domain: DomainOf(rc.Address), Class: m.Class, Size: m.Size, NextAttempt: rc.NextAttempt, ReceivedAt: m.ReceivedAt, Seed: rc.Seed},
			Prefix: rc.Prefix, Body: contents[rc.Content],
		})
	}
	return out
}
