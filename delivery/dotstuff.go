package delivery

import (
	"bytes"
	"net"
)

var (
	crlf    = []byte("\r\n")
	crlfDot = []byte("\r\n.")
	oneDot  = []byte(".")
)

// dotStuff returns body with a period added before every line that starts
// with one (RFC 5321 4.5.2), as slices of body itself, for one writev.
// textproto's DotWriter does the same a byte at a time, which cost 5% of
// the relay's CPU on 20 KB certificate mails; body lines already end in
// CRLF, so only the transparency rule is left to apply.
func dotStuff(body []byte) net.Buffers {
	bufs := make(net.Buffers, 0, 2)
	if len(body) > 0 && body[0] == '.' {
		bufs = append(bufs, oneDot)
	}
	start := 0
	for {
		j := bytes.Index(body[start:], crlfDot)
		if j < 0 {
			break
		}
		end := start + j + len(crlf)
		bufs = append(bufs, body[start:end], oneDot)
		start = end
	}
	return append(bufs, body[start:])
}
