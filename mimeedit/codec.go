package mimeedit

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"mime/quotedprintable"
)

// decode returns the decoded body of a part with transfer encoding enc.
func decode(enc string, raw []byte) ([]byte, error) {
	switch enc {
	case "quoted-printable":
		b, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return nil, fmt.Errorf("%w: quoted-printable: %v", ErrMalformed, err)
		}
		return b, nil
	case "base64":
		return decodeBase64(raw)
	default: // 7bit, 8bit, binary: the identity (RFC 2045 6.2)
		return raw, nil
	}
}

// decodeBase64 decodes like mail readers do: characters outside the base64
// alphabet, line breaks included, are ignored (RFC 2045 6.8), and "=" ends
// the data.
func decodeBase64(raw []byte) ([]byte, error) {
	clean := make([]byte, 0, len(raw))
	for _, c := range raw {
		if c == '=' {
			break
		}
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' {
			clean = append(clean, c)
		}
	}
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
	n, err := base64.RawStdEncoding.Decode(out, clean)
	if err != nil {
		return nil, fmt.Errorf("%w: base64: %v", ErrMalformed, err)
	}
	return out[:n], nil
}

// encodeBase64 encodes b in lines of 76 characters, each ended by CRLF (RFC
// 2045 6.8).
func encodeBase64(b []byte) []byte {
	const lineLen = 76
	enc := make([]byte, base64.StdEncoding.EncodedLen(len(b)))
	base64.StdEncoding.Encode(enc, b)
	out := make([]byte, 0, len(enc)+(len(enc)/lineLen+1)*2)
	for len(enc) > 0 {
		n := min(lineLen, len(enc))
		out = append(out, enc[:n]...)
		out = append(out, "\r\n"...)
		enc = enc[n:]
	}
	return out
}

// encodeQP encodes b as quoted-printable (RFC 2045 6.7) so that
// mime/quotedprintable decodes exactly b again.
//
// text: a CRLF in b is a line break and becomes a hard line break (rule 4);
// a CR or LF that is not part of a CRLF is encoded. Without text, CR and LF
// are always encoded, as binary data requires.
//
// escapeDash: a "-" that starts an encoded line is written "=2D", so that no
// line can look like a boundary delimiter of an enclosing multipart.
func encodeQP(b []byte, text, escapeDash bool) []byte {
	const maxContent = 75 // 76 with the "=" of a soft line break (rule 5)
	const hex = "0123456789ABCDEF"
	out := make([]byte, 0, len(b)+len(b)/8+16)
	lineLen := 0
	put := func(tok ...byte) {
		if lineLen+len(tok) > maxContent {
			out = append(out, "=\r\n"...)
			lineLen = 0
		}
		if lineLen == 0 && escapeDash && tok[0] == '-' {
			tok = []byte("=2D")
		}
		out = append(out, tok...)
		lineLen += len(tok)
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		crlfNext := i+2 < len(b) && b[i+1] == '\r' && b[i+2] == '\n'
		switch {
		case text && c == '\r' && i+1 < len(b) && b[i+1] == '\n':
			out = append(out, "\r\n"...)
			lineLen = 0
			i++
		case c == ' ' || c == '\t':
			// Rule 3: whitespace at the end of an encoded line is removed
			// by decoders, so it is encoded there.
			if i+1 == len(b) || text && crlfNext {
				put('=', hex[c>>4], hex[c&15])
			} else {
				put(c)
			}
		case c >= 33 && c <= 126 && c != '=':
			put(c)
		default:
			put('=', hex[c>>4], hex[c&15])
		}
	}
	return out
}

// maxLine returns the length of the longest line in b, in octets without
// CRLF.
func maxLine(b []byte) int {
	longest := 0
	for len(b) > 0 {
		i := bytes.Index(b, []byte("\r\n"))
		if i < 0 {
			return max(longest, len(b))
		}
		longest = max(longest, i)
		b = b[i+2:]
	}
	return longest
}

// checkCRLF returns ErrNotCRLF if b has a CR or LF outside a CRLF pair.
func checkCRLF(b []byte) error {
	for pos := 0; pos < len(b); {
		next, _, err := nextLine(b, pos)
		if err != nil {
			return err
		}
		pos = next
	}
	return nil
}

// looksLikeDelimiter reports whether a line of b starts with "--" and one
// of bounds, so that it could end an enclosing multipart early. It is
// stricter than RFC 2046 5.1.1 (any such prefix counts).
func looksLikeDelimiter(b []byte, bounds []string) bool {
	if len(bounds) == 0 {
		return false
	}
	for len(b) > 0 {
		line := b
		if i := bytes.Index(b, []byte("\r\n")); i >= 0 {
			line, b = b[:i], b[i+2:]
		} else {
			b = nil
		}
		if rest, ok := bytes.CutPrefix(line, []byte("--")); ok {
			for _, bd := range bounds {
				if bytes.HasPrefix(rest, []byte(bd)) {
					return true
				}
			}
		}
	}
	return false
}

// identityOK reports whether b may be sent as is under the identity
// encoding enc: RFC 2045 2.7 (7bit), 2.8 (8bit) and RFC 5322 2.1.1 line
// lengths; CR and LF only as CRLF, since the gateway refuses anything else.
func identityOK(enc string, b []byte) bool {
	if maxLine(b) > MaxLineLength || checkCRLF(b) != nil {
		return false
	}
	switch enc {
	case "7bit":
		for _, c := range b {
			if c == 0 || c >= 0x80 {
				return false
			}
		}
	case "8bit":
		return bytes.IndexByte(b, 0) < 0
	}
	return true
}
