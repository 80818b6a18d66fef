package mimeedit

import (
	"fmt"
)

// FixLongLines makes every line of msg at most 998 octets long (RFC 5322
// 2.1.1), so that no relay rewrites the body after it has been DKIM-signed.
//
// Every leaf part whose encoded body has a longer line is re-encoded with
// the same decoded content: 7bit, 8bit and binary become quoted-printable,
// over-long quoted-printable and base64 are re-encoded in their own
// encoding. Everything else keeps its bytes. A message without
// Content-Type is one text/plain leaf (RFC 2045 5.2).
//
// A header line (of the message or of any part) over 998 octets is
// ErrLongHeaderLine; a long line in a preamble, epilogue or message/* part
// is ErrUnfixableLongLine. The caller refuses such a message. When no line
// is too long, msg is returned as it is, with changed false.
func FixLongLines(msg []byte) (out []byte, changed bool, err error) {
	if err := checkCRLF(msg); err != nil {
		return nil, false, err
	}
	if maxLine(msg) <= MaxLineLength {
		return msg, false, nil
	}
	root, err := parse(msg)
	if err != nil {
		return nil, false, err
	}
	err = root.headers(func(e *entity) error {
		if n := maxLine(msg[e.start:e.hdrEnd]); n > MaxLineLength {
			return &PartError{e.path, fmt.Errorf("%w (%d octets)", ErrLongHeaderLine, n)}
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	// Only the leaves with long lines are decoded: a malformed part that
	// needs no change is no reason to fail.
	long := func(e *entity) bool { return maxLine(msg[e.hdrEnd:e.end]) > MaxLineLength }
	out, err = rewrite(msg, root, long, func(p *Part, decoded []byte) ([]byte, bool, error) {
		return decoded, true, nil
	})
	if err != nil {
		return nil, false, err
	}
	if n := maxLine(out); n > MaxLineLength {
		return nil, false, fmt.Errorf("%w (%d octets)", ErrUnfixableLongLine, n)
	}
	return out, true, nil
}
