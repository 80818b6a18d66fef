//go:build !(cgo && linux)

package signer

import (
	"crypto"
	"crypto/rsa"
	"errors"
)

func loadOpenSSL() (string, error) {
	return "", errors.New("dkim: OpenSSL needs a Linux build with cgo; this one signs with Go's RSA")
}

func newOpenSSLRSA(*rsa.PrivateKey) (crypto.Signer, error) {
	_, err := loadOpenSSL()
	return nil, err
}
