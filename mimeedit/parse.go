package mimeedit

import (
	"bytes"
	"errors"
	"fmt"
	"mime"
	"strconv"
	"strings"
)

type kind int

const (
	kindLeaf      kind = iota
	kindMultipart      // children parsed
	kindOpaque         // message/*: left as it is
)

// entity is one MIME entity located by byte offsets in the message.
type entity struct {
	path       string
	start, end int  // the entity: header block then body
	hdrEnd     int  // end of the header block, empty line included
	hasBody    bool // the header block ends with the empty line
	header     *Header
	kind       kind
	mediaType  string
	params     map[string]string
	encoding   string
	bounds     []string // boundaries of the enclosing multiparts
	children   []*entity
}

type parser struct {
	msg   []byte
	count int
}

// parse builds the entity tree of msg. msg must already be known to be
// free of bare CR and LF.
func parse(msg []byte) (*entity, error) {
	p := &parser{msg: msg}
	return p.entity(0, len(msg), "", 0, "text/plain", nil)
}

func (p *parser) entity(start, end int, path string, depth int, defaultType string, bounds []string) (*entity, error) {
	p.count++
	if p.count > MaxParts {
		return nil, &PartError{path, ErrTooManyParts}
	}
	if depth > MaxDepth {
		return nil, &PartError{path, ErrTooDeep}
	}
	e := &entity{path: path, start: start, end: end, hdrEnd: end, bounds: bounds}

	// The header block ends with the first empty line (RFC 5322 2.1,
	// RFC 2046 5.1.1: a body part with no header fields starts with it).
	region := p.msg[start:end]
	if bytes.HasPrefix(region, []byte("\r\n")) {
		e.hdrEnd, e.hasBody = start+2, true
	} else if i := bytes.Index(region, []byte("\r\n\r\n")); i >= 0 {
		e.hdrEnd, e.hasBody = start+i+4, true
	}
	h, err := ParseHeader(p.msg[start:e.hdrEnd])
	if err != nil {
		return nil, &PartError{path, err}
	}
	e.header = h

	if err := e.contentType(defaultType); err != nil {
		return nil, &PartError{path, err}
	}
	if err := e.transferEncoding(); err != nil {
		return nil, &PartError{path, err}
	}

	switch {
	case strings.HasPrefix(e.mediaType, "multipart/"):
		e.kind = kindMultipart
		// RFC 2045 6.4: no encoding but the identity ones for multipart.
		if !identityEncoding(e.encoding) {
			return nil, &PartError{path, fmt.Errorf("%w: multipart with Content-Transfer-Encoding %s (RFC 2045 6.4)", ErrMalformed, e.encoding)}
		}
		boundary := e.params["boundary"]
		if boundary == "" {
			return nil, &PartError{path, fmt.Errorf("%w: multipart without boundary (RFC 2046 5.1.1)", ErrMalformed)}
		}
		if e.hasBody {
			if err := p.children(e, depth, boundary); err != nil {
				return nil, err
			}
		}
	case strings.HasPrefix(e.mediaType, "message/"):
		e.kind = kindOpaque
	default:
		e.kind = kindLeaf
	}
	return e, nil
}

// contentType sets mediaType and params. An absent Content-Type means the
// default (RFC 2045 5.2, RFC 2046 5.1.5); a present but unparsable or
// repeated one is an error, because receivers would disagree on the type.
func (e *entity) contentType(defaultType string) error {
	vs := e.header.Values("Content-Type")
	switch len(vs) {
	case 0:
		e.mediaType, e.params = defaultType, map[string]string{}
		if defaultType == "text/plain" {
			e.params["charset"] = "us-ascii"
		}
		return nil
	case 1:
	default:
		return fmt.Errorf("%w: %d Content-Type fields", ErrMalformed, len(vs))
	}
	mt, params, err := mime.ParseMediaType(vs[0])
	if err != nil && !(errors.Is(err, mime.ErrInvalidMediaParameter) && mt != "") {
		return fmt.Errorf("%w: Content-Type %.60q: %v", ErrMalformed, vs[0], err)
	}
	if !strings.Contains(mt, "/") { // mime.ParseMediaType accepts a bare "text"
		return fmt.Errorf("%w: Content-Type %.60q without subtype", ErrMalformed, vs[0])
	}
	if params == nil {
		params = map[string]string{}
	}
	e.mediaType, e.params = mt, params
	return nil
}

func (e *entity) transferEncoding() error {
	vs := e.header.Values("Content-Transfer-Encoding")
	switch len(vs) {
	case 0:
		e.encoding = "7bit" // RFC 2045 6.1
		return nil
	case 1:
	default:
		return fmt.Errorf("%w: %d Content-Transfer-Encoding fields", ErrMalformed, len(vs))
	}
	enc := strings.ToLower(strings.TrimSpace(vs[0]))
	switch enc {
	case "":
		enc = "7bit"
	case "7bit", "8bit", "binary", "quoted-printable", "base64":
	default:
		// RFC 2045 6.4 lets an unknown encoding stand for opaque data,
		// but such a text part would hide its links from the gateway.
		return fmt.Errorf("%w: unknown Content-Transfer-Encoding %.40q", ErrMalformed, vs[0])
	}
	e.encoding = enc
	return nil
}

func identityEncoding(enc string) bool {
	return enc == "7bit" || enc == "8bit" || enc == "binary"
}

// delimiter is one boundary delimiter line found in a multipart body.
type delimiter struct {
	lineStart int  // "--boundary" starts here
	next      int  // after the line's CRLF (or the end of the body)
	close     bool // "--boundary--"
}

// children finds the delimiter lines of a multipart body and parses the body
// parts between them (RFC 2046 5.1.1). The CRLF before a delimiter line
// belongs to the delimiter, not to the part before it. Everything before the
// first delimiter is the preamble and everything after the close delimiter
// the epilogue; both stay as they are. A missing close delimiter is
// tolerated: the last part then runs to the end of the body.
func (p *parser) children(e *entity, depth int, boundary string) error {
	var delims []delimiter
	dash := []byte("--" + boundary)
	for pos := e.hdrEnd; pos < e.end; {
		next, lineEnd, err := nextLine(p.msg[:e.end], pos)
		if err != nil {
			return &PartError{e.path, err}
		}
		if close, ok := isDelimiter(p.msg[pos:lineEnd], dash); ok {
			delims = append(delims, delimiter{lineStart: pos, next: next, close: close})
			if close {
				break
			}
		}
		pos = next
	}

	defaultType := "text/plain"
	if e.mediaType == "multipart/digest" {
		defaultType = "message/rfc822" // RFC 2046 5.1.5
	}
	bounds := append(append([]string(nil), e.bounds...), boundary)
	n := 0
	for i, d := range delims {
		if d.close {
			break
		}
		start, end := d.next, e.end
		if i+1 < len(delims) {
			end = max(delims[i+1].lineStart-2, start)
		}
		n++
		path := strconv.Itoa(n)
		if e.path != "" {
			path = e.path + "." + path
		}
		c, err := p.entity(start, end, path, depth+1, defaultType, bounds)
		if err != nil {
			return err
		}
		e.children = append(e.children, c)
	}
	return nil
}

// isDelimiter reports whether line is a delimiter line for the dash-boundary
// dash: "--boundary" or "--boundary--" followed only by transport padding
// (RFC 2046 5.1.1). A longer boundary that merely starts with this one is
// not a match, so nested multiparts may reuse the outer boundary as prefix.
func isDelimiter(line, dash []byte) (close, ok bool) {
	if !bytes.HasPrefix(line, dash) {
		return false, false
	}
	rest := line[len(dash):]
	if bytes.HasPrefix(rest, []byte("--")) {
		close, rest = true, rest[2:]
	}
	if len(bytes.Trim(rest, " \t")) != 0 {
		return false, false
	}
	return close, true
}

// leaves calls fn for every leaf with a body, in document order.
func (e *entity) leaves(fn func(*entity) error) error {
	switch e.kind {
	case kindMultipart:
		for _, c := range e.children {
			if err := c.leaves(fn); err != nil {
				return err
			}
		}
	case kindLeaf:
		if e.hasBody {
			return fn(e)
		}
	}
	return nil
}

// headers calls fn for the header block of every entity.
func (e *entity) headers(fn func(*entity) error) error {
	if err := fn(e); err != nil {
		return err
	}
	for _, c := range e.children {
		if err := c.headers(fn); err != nil {
			return err
		}
	}
	return nil
}
