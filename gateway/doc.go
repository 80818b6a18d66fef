// Package gateway is certgate's mail path: the SMTP submission server that
// accepts an issuer's mail, the preparation that turns it into signed
// per-recipient copies, the queue runner that shapes delivery per provider
// lane, and the SMTP client that hands copies to the receiving MX. It never
// decides limits itself: it asks package policy.
package gateway
