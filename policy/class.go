package policy

import "strings"

// Class is a message class. Classes share a provider's lane; within a lane
// transactional mail always goes ahead of bulk mail.
type Class string

const (
	// ClassTransactional is mail a person is waiting for right now: a
	// one-time code, a voucher, the token for an identity check, the
	// certificate itself after a purchase.
	ClassTransactional Class = "transactional"
	// ClassBulk is everything else: issuance waves, renewal reminders.
	ClassBulk Class = "bulk"
)

// ParseClass reads a class name, ignoring case and surrounding space. It
// reports false for anything but the known classes (including ""), so the
// caller can fall back to the tenant's default class.
func ParseClass(s string) (Class, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case string(ClassTransactional):
		return ClassTransactional, true
	case string(ClassBulk):
		return ClassBulk, true
	}
	return "", false
}

// Priority orders classes inside a lane: a greater value is served first.
// Transactional is 1, bulk is 0; an unknown class ranks with bulk, so a
// mislabelled message can never jump the queue.
func (c Class) Priority() int {
	if c == ClassTransactional {
		return 1
	}
	return 0
}

// String returns the class name, as used in headers, the store and metric
// labels.
func (c Class) String() string { return string(c) }
