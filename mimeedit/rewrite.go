package mimeedit

import (
	"bytes"
	"maps"
	"slices"
	"sort"
	"strings"
)

// EditFunc is called by Rewrite for every leaf part. It returns the new
// decoded body and whether it changed; changed with an equal body still
// forces the part to be re-encoded. decoded must not be modified.
type EditFunc func(p *Part, decoded []byte) (newDecoded []byte, changed bool, err error)

// Rewrite calls edit for every leaf part of msg in document order (see Part;
// multipart/* is followed recursively, message/* parts are left as they are)
// with the decoded body, and re-encodes the parts edit changed:
//
//   - base64 stays base64, in lines of 76 characters (RFC 2045 6.8);
//   - quoted-printable stays quoted-printable (RFC 2045 6.7);
//   - 7bit, 8bit and binary stay as they are if the new body is still valid
//     for them (RFC 2045 2.7, 2.8; lines of at most 998 octets, RFC 5322
//     2.1.1; no CR or LF outside CRLF), and become quoted-printable
//     otherwise, updating the Content-Transfer-Encoding field in place (or
//     adding it, and MIME-Version at the top level if missing).
//
// A re-encoded body never has a line that starts like a delimiter of an
// enclosing multipart: quoted-printable then encodes that "-" as "=2D".
//
// Every byte outside the changed bodies and Content-Transfer-Encoding fields
// is kept. When nothing changes, out is msg itself.
//
// Errors: ErrNotCRLF, ErrMalformed, ErrTooDeep, ErrTooManyParts (usually
// wrapped in a *PartError), or the error edit returned.
func Rewrite(msg []byte, edit EditFunc) (out []byte, err error) {
	if err := checkCRLF(msg); err != nil {
		return nil, err
	}
	root, err := parse(msg)
	if err != nil {
		return nil, err
	}
	return rewrite(msg, root, nil, edit)
}

// RewriteTypes is Rewrite for the leaves of the given media types
// (lower case, such as "text/plain") only: the others are neither decoded
// nor given to edit, so a large attachment costs no copy, and a broken
// encoding in one is not an error.
func RewriteTypes(msg []byte, mediaTypes []string, edit EditFunc) (out []byte, err error) {
	if err := checkCRLF(msg); err != nil {
		return nil, err
	}
	root, err := parse(msg)
	if err != nil {
		return nil, err
	}
	return rewrite(msg, root, func(e *entity) bool { return slices.Contains(mediaTypes, e.mediaType) }, edit)
}

// Walk calls fn for every leaf part of msg with its decoded body, like
// Rewrite without changes.
func Walk(msg []byte, fn func(p *Part, decoded []byte) error) error {
	_, err := Rewrite(msg, func(p *Part, decoded []byte) ([]byte, bool, error) {
		return nil, false, fn(p, decoded)
	})
	return err
}

// splice replaces msg[start:end] by data.
type splice struct {
	start, end int
	data       []byte
}

// rewrite is Rewrite on a parsed message. If want is not nil, only the
// leaves it selects are decoded and given to edit.
func rewrite(msg []byte, root *entity, want func(e *entity) bool, edit EditFunc) ([]byte, error) {
	var splices []splice
	err := root.leaves(func(e *entity) error {
		if want != nil && !want(e) {
			return nil
		}
		raw := msg[e.hdrEnd:e.end:e.end] // an append by edit cannot reach msg
		decoded, err := decode(e.encoding, raw)
		if err != nil {
			return &PartError{e.partPath(), err}
		}
		p := e.part(msg)
		newDecoded, changed, err := edit(p, decoded)
		if err != nil {
			return err
		}
		if !changed {
			return nil
		}
		body, enc := e.encode(newDecoded)
		splices = append(splices, splice{e.hdrEnd, e.end, body})
		if enc != e.encoding {
			splices = append(splices, e.setEncoding(enc)...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(splices) == 0 {
		return msg, nil
	}
	sort.SliceStable(splices, func(i, j int) bool { return splices[i].start < splices[j].start })
	var out bytes.Buffer
	out.Grow(len(msg) + len(msg)/4)
	pos := 0
	for _, s := range splices {
		out.Write(msg[pos:s.start])
		out.Write(s.data)
		pos = s.end
	}
	out.Write(msg[pos:])
	return out.Bytes(), nil
}

// partPath is the IMAP section number of a leaf: "1" for a message that is
// not multipart (RFC 3501 6.4.5).
func (e *entity) partPath() string {
	if e.path == "" {
		return "1"
	}
	return e.path
}

func (e *entity) part(msg []byte) *Part {
	h, _ := ParseHeader(msg[e.start:e.hdrEnd]) // parsed before, cannot fail
	charset := strings.ToLower(e.params["charset"])
	if charset == "" && strings.HasPrefix(e.mediaType, "text/") {
		charset = "us-ascii" // RFC 2046 4.1.2
	}
	return &Part{
		Path:      e.partPath(),
		Header:    h,
		MediaType: e.mediaType,
		Params:    maps.Clone(e.params),
		Charset:   charset,
		Encoding:  e.encoding,
		Raw:       msg[e.hdrEnd:e.end:e.end],
	}
}

// encode returns the encoded body for decoded and its transfer encoding.
func (e *entity) encode(decoded []byte) ([]byte, string) {
	text := strings.HasPrefix(e.mediaType, "text/")
	switch e.encoding {
	case "base64":
		return encodeBase64(decoded), "base64"
	case "quoted-printable":
	default:
		if identityOK(e.encoding, decoded) && !looksLikeDelimiter(decoded, e.bounds) {
			return decoded, e.encoding
		}
	}
	body := encodeQP(decoded, text, false)
	if looksLikeDelimiter(body, e.bounds) {
		body = encodeQP(decoded, text, true)
	}
	return body, "quoted-printable"
}

// setEncoding returns the splices that make the header say enc: the
// Content-Transfer-Encoding field is replaced where it is, keeping the
// spelling of its name, or added at the end of the header block.
func (e *entity) setEncoding(enc string) []splice {
	for _, f := range e.header.fields {
		if strings.EqualFold(f.Name, "Content-Transfer-Encoding") {
			start := e.start + f.off
			return []splice{{start, start + len(f.Raw), []byte(f.Name + ": " + enc + "\r\n")}}
		}
	}
	add := "Content-Transfer-Encoding: " + enc + "\r\n"
	if e.path == "" && e.header.Count("MIME-Version") == 0 {
		// RFC 2045 4: without MIME-Version the encoding means nothing.
		add = "MIME-Version: 1.0\r\n" + add
	}
	at := e.hdrEnd - 2 // before the empty line
	return []splice{{at, at, []byte(add)}}
}
