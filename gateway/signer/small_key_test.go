//go:debug rsa1024min=0

package signer

// The go:debug line above lets the tests make a 512-bit RSA key, to check
// that LoadKey refuses it itself (RFC 8301 3.2) rather than relying on
// crypto/rsa's own minimum.
