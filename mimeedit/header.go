package mimeedit

import (
	"bytes"
	"fmt"
	"strings"
)

// SplitHeader splits msg into its header block and its body.
//
// header runs up to and including the empty line that ends it (RFC 5322
// 2.1), so header+body is always exactly msg. A message without an empty
// line is all header and body is nil; a message that starts with an empty
// line has the header "\r\n".
//
// Only the header block is checked: a bare LF or CR in it (RFC 5322 2.3) is
// ErrNotCRLF, so LF-only input fails here instead of being misread.
func SplitHeader(msg []byte) (header, body []byte, err error) {
	pos := 0
	for pos < len(msg) {
		next, lineEnd, err := nextLine(msg, pos)
		if err != nil {
			return nil, nil, err
		}
		if lineEnd == pos && next > pos { // the empty line
			return msg[:next], msg[next:], nil
		}
		pos = next
	}
	return msg, nil, nil
}

// nextLine returns the end of the line starting at pos (lineEnd, before
// CRLF) and the start of the following line (next, after CRLF). The last line
// of b may lack a CRLF. A bare CR or LF is ErrNotCRLF.
func nextLine(b []byte, pos int) (next, lineEnd int, err error) {
	i := bytes.IndexAny(b[pos:], "\r\n")
	if i < 0 {
		return len(b), len(b), nil
	}
	i += pos
	if b[i] == '\n' || i+1 >= len(b) || b[i+1] != '\n' {
		return 0, 0, fmt.Errorf("%w at offset %d", ErrNotCRLF, i)
	}
	return i + 2, i, nil
}

// Field is one header field as it appears in the message.
type Field struct {
	// Name is the field name as written (case preserved), without the
	// colon and without any whitespace before it (RFC 5322 4.5.8).
	Name string
	// Raw is the whole field: name, colon, value, and every line of it with
	// its CRLF, folding included. It must not be modified.
	Raw []byte

	off int // offset of Raw within the parsed header block
}

// Value returns the unfolded field body (RFC 5322 2.2.3: CRLF before WSP
// removed), without leading and trailing whitespace. Encoded words (RFC
// 2047) are not decoded.
func (f Field) Value() string {
	_, v, _ := bytes.Cut(f.Raw, []byte(":"))
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	return strings.Trim(string(v), " \t")
}

// Header is a parsed header block that keeps the raw bytes of every field, so
// that fields can be read, deleted and added without touching the others.
// Field names are compared case-insensitively (RFC 5322 1.2.2).
type Header struct {
	fields     []Field
	terminated bool // ends with the empty line
}

// ParseHeader parses a header block as returned by SplitHeader (with or
// without the final empty line). A line that is neither a field nor a
// continuation of one (RFC 5322 2.2, 3.6.8) is ErrMalformed; bare LF or CR
// is ErrNotCRLF. The Header refers to header's bytes, which must not change
// while it is in use.
func ParseHeader(header []byte) (*Header, error) {
	h := &Header{}
	pos := 0
	for pos < len(header) {
		next, lineEnd, err := nextLine(header, pos)
		if err != nil {
			return nil, err
		}
		switch {
		case lineEnd == pos && next > pos:
			if next != len(header) {
				return nil, fmt.Errorf("%w: data after the end of the header", ErrMalformed)
			}
			h.terminated = true
		case header[pos] == ' ' || header[pos] == '\t':
			// RFC 5322 2.2.3: a folded continuation line.
			if len(h.fields) == 0 {
				return nil, fmt.Errorf("%w: header starts with a continuation line", ErrMalformed)
			}
			f := &h.fields[len(h.fields)-1]
			f.Raw = header[f.off:next]
		default:
			name, err := fieldName(header[pos:lineEnd])
			if err != nil {
				return nil, err
			}
			h.fields = append(h.fields, Field{Name: name, Raw: header[pos:next], off: pos})
		}
		pos = next
	}
	return h, nil
}

// fieldName returns the name of the field starting on line. RFC 5322 3.6.8:
// printable US-ASCII except colon; whitespace before the colon is the
// obsolete syntax of RFC 5322 4.5.8 and is accepted and dropped.
func fieldName(line []byte) (string, error) {
	i := bytes.IndexByte(line, ':')
	if i < 0 {
		return "", fmt.Errorf("%w: header line without a colon: %.40q", ErrMalformed, line)
	}
	name := bytes.TrimRight(line[:i], " \t")
	if err := checkFieldName(string(name)); err != nil {
		return "", err
	}
	return string(name), nil
}

func checkFieldName(name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty header field name", ErrMalformed)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 33 || c > 126 || c == ':' {
			return fmt.Errorf("%w: invalid header field name %.40q", ErrMalformed, name)
		}
	}
	return nil
}

// Fields returns the fields in order. The Raw slices must not be modified.
func (h *Header) Fields() []Field {
	return append([]Field(nil), h.fields...)
}

// Get returns the unfolded value of the first field named name, or "".
func (h *Header) Get(name string) string {
	for _, f := range h.fields {
		if strings.EqualFold(f.Name, name) {
			return f.Value()
		}
	}
	return ""
}

// Values returns the unfolded values of all fields named name, in order.
func (h *Header) Values(name string) []string {
	var vs []string
	for _, f := range h.fields {
		if strings.EqualFold(f.Name, name) {
			vs = append(vs, f.Value())
		}
	}
	return vs
}

// Len returns the number of fields.
func (h *Header) Len() int { return len(h.fields) }

// Count returns how many fields are named name.
func (h *Header) Count(name string) int {
	n := 0
	for _, f := range h.fields {
		if strings.EqualFold(f.Name, name) {
			n++
		}
	}
	return n
}

// Del deletes every field named name and returns how many it deleted.
func (h *Header) Del(name string) int {
	return h.DelFunc(func(n string) bool { return strings.EqualFold(n, name) })
}

// DelFunc deletes every field whose name del reports true for (for example
// all X-Certgate-* control fields) and returns how many it deleted.
func (h *Header) DelFunc(del func(name string) bool) int {
	kept := h.fields[:0]
	for _, f := range h.fields {
		if !del(f.Name) {
			kept = append(kept, f)
		}
	}
	n := len(h.fields) - len(kept)
	clear(h.fields[len(kept):])
	h.fields = kept
	return n
}

// Add appends the field "name: value" CRLF after the last field. value must
// be a single line: CR, LF and NUL are refused (header injection), and a
// field longer than 998 octets is ErrLongHeaderLine (RFC 5322 2.1.1); Add
// does not fold.
func (h *Header) Add(name, value string) error {
	if err := checkFieldName(name); err != nil {
		return err
	}
	if strings.ContainsAny(value, "\r\n\x00") {
		return fmt.Errorf("%w: header field value with CR, LF or NUL", ErrMalformed)
	}
	raw := name + ": " + value + "\r\n"
	if len(raw)-2 > MaxLineLength {
		return fmt.Errorf("%w: %s field of %d octets", ErrLongHeaderLine, name, len(raw)-2)
	}
	if n := len(h.fields); n > 0 && !bytes.HasSuffix(h.fields[n-1].Raw, []byte("\r\n")) {
		// The last field of a message without body may lack its CRLF.
		last := &h.fields[n-1]
		last.Raw = append(append([]byte(nil), last.Raw...), "\r\n"...)
	}
	h.fields = append(h.fields, Field{Name: name, Raw: []byte(raw)})
	return nil
}

// Bytes returns the header block: every field's raw bytes in order, then the
// empty line if the parsed block had one.
func (h *Header) Bytes() []byte {
	var b bytes.Buffer
	for _, f := range h.fields {
		b.Write(f.Raw)
	}
	if h.terminated {
		b.WriteString("\r\n")
	}
	return b.Bytes()
}
