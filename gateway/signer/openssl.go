//go:build cgo && linux

package signer

// OpenSSL's RSA is about three times faster than Go's on CPUs with wide
// multipliers (0.22 against 0.73 ms per RSA-2048 signature on the benchmark
// machine), and RSA signing is the largest single cost of relaying a
// message. libcrypto is opened with dlopen, so building needs no OpenSSL
// headers and a host without libcrypto.so.3 simply keeps Go's RSA.

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>

static void *(*p_d2i_PrivateKey)(int, void **, const unsigned char **, long);
static void (*p_EVP_PKEY_free)(void *);
static void *(*p_EVP_PKEY_CTX_new)(void *, void *);
static void (*p_EVP_PKEY_CTX_free)(void *);
static int (*p_EVP_PKEY_sign_init)(void *);
static int (*p_EVP_PKEY_CTX_set_rsa_padding)(void *, int);
static int (*p_EVP_PKEY_CTX_set_signature_md)(void *, const void *);
static const void *(*p_EVP_sha256)(void);
static int (*p_EVP_PKEY_sign)(void *, unsigned char *, size_t *, const unsigned char *, size_t);
static unsigned long (*p_ERR_get_error)(void);
static void (*p_ERR_error_string_n)(unsigned long, char *, size_t);
static const char *(*p_OpenSSL_version)(int);

#define CG_SYM(name) if ((*(void **)&p_##name = dlsym(h, #name)) == NULL) return #name

// cg_open loads libcrypto and every function we use; it returns NULL, or
// what was missing.
static const char *cg_open(const char *lib) {
	void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) return lib;
	CG_SYM(d2i_PrivateKey);
	CG_SYM(EVP_PKEY_free);
	CG_SYM(EVP_PKEY_CTX_new);
	CG_SYM(EVP_PKEY_CTX_free);
	CG_SYM(EVP_PKEY_sign_init);
	CG_SYM(EVP_PKEY_CTX_set_rsa_padding);
	CG_SYM(EVP_PKEY_CTX_set_signature_md);
	CG_SYM(EVP_sha256);
	CG_SYM(EVP_PKEY_sign);
	CG_SYM(ERR_get_error);
	CG_SYM(ERR_error_string_n);
	CG_SYM(OpenSSL_version);
	return NULL;
}

static const char *cg_version(void) { return p_OpenSSL_version(0); }

// EVP_PKEY_RSA is NID_rsaEncryption, 6.
static void *cg_rsa_key(const unsigned char *der, long len) {
	const unsigned char *p = der;
	return p_d2i_PrivateKey(6, NULL, &p, len);
}

static void cg_free_key(void *pkey) { p_EVP_PKEY_free(pkey); }

// cg_sign makes an RSASSA-PKCS1-v1_5 signature (RFC 8017 8.2.1) of a
// SHA-256 digest. A context per call: an EVP_PKEY_CTX is not safe for
// concurrent use, the key is. On failure it returns OpenSSL's error code.
static unsigned long cg_sign(void *pkey, const unsigned char *digest, size_t dlen, unsigned char *sig, size_t *siglen) {
	void *ctx = p_EVP_PKEY_CTX_new(pkey, NULL);
	if (ctx == NULL) return p_ERR_get_error() | 1;
	int ok = p_EVP_PKEY_sign_init(ctx) > 0
		&& p_EVP_PKEY_CTX_set_rsa_padding(ctx, 1) > 0 // RSA_PKCS1_PADDING
		&& p_EVP_PKEY_CTX_set_signature_md(ctx, p_EVP_sha256()) > 0
		&& p_EVP_PKEY_sign(ctx, sig, siglen, digest, dlen) > 0;
	p_EVP_PKEY_CTX_free(ctx);
	if (ok) return 0;
	unsigned long e = p_ERR_get_error(), next;
	while ((next = p_ERR_get_error()) != 0) {} // leave the thread's queue empty
	return e | (e == 0);
}

static void cg_error_string(unsigned long e, char *buf, size_t len) { p_ERR_error_string_n(e, buf, len); }
*/
import "C"

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"unsafe"
)

var openssl struct {
	once    sync.Once
	version string
	err     error
}

func loadOpenSSL() (string, error) {
	openssl.once.Do(func() {
		lib := C.CString("libcrypto.so.3")
		defer C.free(unsafe.Pointer(lib))
		if missing := C.cg_open(lib); missing != nil {
			openssl.err = fmt.Errorf("dkim: OpenSSL 3 not usable: %s not found", C.GoString(missing))
			return
		}
		openssl.version = C.GoString(C.cg_version())
	})
	return openssl.version, openssl.err
}

// opensslRSA signs with OpenSSL and checks every signature with Go's RSA
// before it leaves: a verification costs about 30 µs and stops a binding or
// library fault from ever sending a bad signature (or leaking the key
// through a faulty CRT result).
type opensslRSA struct {
	goKey *rsa.PrivateKey
	pkey  unsafe.Pointer
}

func newOpenSSLRSA(priv *rsa.PrivateKey) (crypto.Signer, error) {
	if _, err := loadOpenSSL(); err != nil {
		return nil, err
	}
	der := x509.MarshalPKCS1PrivateKey(priv)
	pkey := C.cg_rsa_key((*C.uchar)(unsafe.Pointer(&der[0])), C.long(len(der)))
	clear(der)
	if pkey == nil {
		return nil, errors.New("dkim: OpenSSL refused the RSA key")
	}
	s := &opensslRSA{goKey: priv, pkey: pkey}
	runtime.AddCleanup(s, func(p unsafe.Pointer) { C.cg_free_key(p) }, pkey)
	return s, nil
}

func (s *opensslRSA) Public() crypto.PublicKey { return &s.goKey.PublicKey }

func (s *opensslRSA) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.SHA256 || len(digest) != crypto.SHA256.Size() {
		return s.goKey.Sign(rand, digest, opts) // DKIM signs SHA-256 only; anything else stays in Go
	}
	sig := make([]byte, s.goKey.Size())
	n := C.size_t(len(sig))
	code := C.cg_sign(s.pkey, (*C.uchar)(unsafe.Pointer(&digest[0])), C.size_t(len(digest)),
		(*C.uchar)(unsafe.Pointer(&sig[0])), &n)
	runtime.KeepAlive(s) // the cleanup must not free pkey during the call
	if code != 0 {
		var buf [256]C.char
		C.cg_error_string(code, &buf[0], C.size_t(len(buf)))
		return nil, fmt.Errorf("dkim: OpenSSL RSA signing: %s", C.GoString(&buf[0]))
	}
	sig = sig[:n]
	if err := rsa.VerifyPKCS1v15(&s.goKey.PublicKey, crypto.SHA256, digest, sig); err != nil {
		return nil, fmt.Errorf("dkim: OpenSSL made an RSA signature that does not verify: %w", err)
	}
	return sig, nil
}
