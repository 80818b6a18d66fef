package mimeedit

import (
	"bytes"
	"slices"
	"testing"

	"github.com/certgate/certgate/sim"
)

// samples are the shared sample certificate mails, in name order.
func samples(testing.TB) []sim.Sample { return sim.SampleMails() }

func sampleMsg(tb testing.TB, prefix string) []byte {
	tb.Helper()
	for _, s := range samples(tb) {
		if len(s.Name) >= len(prefix) && s.Name[:len(prefix)] == prefix {
			return s.Data
		}
	}
	tb.Fatalf("no sample %s*", prefix)
	return nil
}

// leaf is what a test needs to compare the leaves of two messages.
type leaf struct {
	path, mediaType, encoding string
	raw, decoded              []byte
}

func leaves(tb testing.TB, msg []byte) []leaf {
	tb.Helper()
	ls, err := collect(msg)
	if err != nil {
		tb.Fatalf("walk: %v", err)
	}
	return ls
}

func collect(msg []byte) ([]leaf, error) {
	var ls []leaf
	err := Walk(msg, func(p *Part, decoded []byte) error {
		ls = append(ls, leaf{p.Path, p.MediaType, p.Encoding, slices.Clone(p.Raw), slices.Clone(decoded)})
		return nil
	})
	return ls, err
}

// skeleton returns msg without the bodies of its leaves: the headers,
// preambles, delimiters, epilogues and message/* parts, in order.
func skeleton(tb testing.TB, msg []byte) [][]byte {
	tb.Helper()
	root, err := parse(msg)
	if err != nil {
		tb.Fatalf("parse: %v", err)
	}
	var segs [][]byte
	pos := 0
	_ = root.leaves(func(e *entity) error {
		segs = append(segs, msg[pos:e.hdrEnd])
		pos = e.end
		return nil
	})
	return append(segs, msg[pos:])
}

func equalSkeleton(tb testing.TB, a, b []byte) {
	tb.Helper()
	sa, sb := skeleton(tb, a), skeleton(tb, b)
	if len(sa) != len(sb) {
		tb.Fatalf("skeletons have %d and %d segments", len(sa), len(sb))
	}
	for i := range sa {
		if !bytes.Equal(sa[i], sb[i]) {
			tb.Errorf("segment %d differs:\n%q\n%q", i, sa[i], sb[i])
		}
	}
}

func checkLines(tb testing.TB, msg []byte, limit int) {
	tb.Helper()
	if n := maxLine(msg); n > limit {
		tb.Errorf("longest line is %d octets, want <= %d", n, limit)
	}
}
