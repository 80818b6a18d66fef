// Package mimeedit edits untrusted MIME mail without disturbing the bytes it
// does not change.
//
// The gateway DKIM-signs what it delivers, so a body that a relay would
// rewrite downstream (a line over 998 octets, RFC 5322 2.1.1) must be
// re-encoded before signing, and gated download links must be rewritten in
// text parts whatever their transfer encoding. Both need a walker that
// re-serializes nothing it was not asked to change: headers keep their
// folding and case, preambles, epilogues, delimiters, attachments and
// message/rfc822 parts stay byte for byte. go-message re-serializes what it
// parses, which is why this package works on byte offsets instead.
//
// Input must use CRLF line endings (RFC 5322 2.3); a bare LF or CR is
// ErrNotCRLF. Structure that receivers could read in more than one way
// (duplicate or unparsable Content-Type or Content-Transfer-Encoding, a
// multipart without boundary, an unknown transfer encoding) is ErrMalformed:
// the caller refuses such mail rather than sign and deliver something whose
// links it could not see.
package mimeedit

import (
	"errors"
	"fmt"
)

const (
	// MaxLineLength is the longest line, in octets without CRLF, that RFC
	// 5322 2.1.1 allows.
	MaxLineLength = 998
	// MaxDepth is how deeply multiparts may nest.
	MaxDepth = 20
	// MaxParts is how many MIME entities (containers included) a message
	// may have.
	MaxParts = 1000
)

var (
	// ErrNotCRLF means the input has a bare LF or CR (RFC 5322 2.3), for
	// example LF-only line endings.
	ErrNotCRLF = errors.New("mimeedit: bare LF or CR; lines must end in CRLF")
	// ErrMalformed means the message structure cannot be read unambiguously.
	ErrMalformed = errors.New("mimeedit: malformed message")
	// ErrLongHeaderLine means a header line (of the message or of a part) is
	// longer than 998 octets. It cannot be fixed without changing what the
	// header says, so the message must be refused.
	ErrLongHeaderLine = errors.New("mimeedit: header line longer than 998 octets")
	// ErrUnfixableLongLine means a body line longer than 998 octets is in a
	// place that cannot be re-encoded: a preamble, epilogue, delimiter or
	// message/* part.
	ErrUnfixableLongLine = errors.New("mimeedit: line longer than 998 octets outside any re-encodable part")
	// ErrTooDeep means multiparts nest deeper than MaxDepth.
	ErrTooDeep = errors.New("mimeedit: multipart nesting too deep")
	// ErrTooManyParts means the message has more than MaxParts entities.
	ErrTooManyParts = errors.New("mimeedit: too many MIME parts")
)

// PartError reports an error in one part.
type PartError struct {
	// Path is the part's section number as in IMAP (RFC 3501 6.4.5), for
	// example "2.1"; "" is the message itself.
	Path string
	Err  error
}

func (e *PartError) Error() string {
	if e.Path == "" {
		return fmt.Sprintf("message: %v", e.Err)
	}
	return fmt.Sprintf("part %s: %v", e.Path, e.Err)
}

func (e *PartError) Unwrap() error { return e.Err }

// Part describes one leaf part: a part that is neither multipart/* nor
// message/*, and that has a body (a header block ended by an empty line).
type Part struct {
	// Path is the section number as in IMAP (RFC 3501 6.4.5): "1" for the
	// body of a message that is not multipart, "1", "2", "2.1" ... inside
	// multiparts.
	Path string
	// Header is a copy of the part's header fields (for the top-level part,
	// the message header). Changing it has no effect on the output.
	Header *Header
	// MediaType is the lower-case media type, for example "text/plain";
	// "text/plain" when Content-Type is absent (RFC 2045 5.2), or
	// "message/rfc822" inside multipart/digest (RFC 2046 5.1.5).
	MediaType string
	// Params are the Content-Type parameters as returned by
	// mime.ParseMediaType (lower-case names, RFC 2231 decoded).
	Params map[string]string
	// Charset is the lower-case charset parameter; "us-ascii" for text/*
	// without one (RFC 2046 4.1.2), "" for other types without one.
	Charset string
	// Encoding is the lower-case Content-Transfer-Encoding: "7bit" (also
	// when absent, RFC 2045 6.1), "8bit", "binary", "quoted-printable" or
	// "base64".
	Encoding string
	// Raw is the body as it appears in the message, still encoded. It must
	// not be modified.
	Raw []byte
}
