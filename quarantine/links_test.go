package quarantine

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/certgate/certgate/mimeedit"
	"github.com/certgate/certgate/sim"
)

var gatePrefixes = []string{
	"https://descargas.ca.example/certificado/",
	"https://www.certs.example/download/",
	"https://emissao.ac.example/emitir",
}

func sample(t testing.TB, name string) []byte {
	t.Helper()
	b, err := sim.SampleMail(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodedParts returns the decoded text of every text leaf.
func decodedParts(t *testing.T, msg []byte) map[string]string {
	t.Helper()
	parts := map[string]string{}
	err := mimeedit.Walk(msg, func(p *mimeedit.Part, decoded []byte) error {
		parts[p.Path+" "+p.MediaType] = string(decoded)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return parts
}

var gateURL = regexp.MustCompile(`https://gate\.ca\.example/d/([A-Za-z0-9_-]{22})`)

func TestRewriteSamples(t *testing.T) {
	r := NewRewriter(gatePrefixes, "https://gate.ca.example/")
	cases := []struct {
		file  string
		urls  []string // the original URLs, unescaped
		parts int      // text parts that must change
	}{
		{"01-es-download-link-qp.eml", []string{"https://descargas.ca.example/certificado/descargar?pedido=88412&clave=Zk3p9QwX"}, 2},
		{"02-fr-plaintext-pem-multi-rcpt.eml", []string{"https://www.certs.example/download/7731/9f2c4e"}, 1},
		{"03-fr-attachment-b64-text.eml", []string{"https://www.certs.example/download/7732/a81d07"}, 1},
		{"05-pt-voucher-html-8bit-longline.eml", []string{"https://emissao.ac.example/emitir?voucher=AC1-77F2-K9"}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			in := sample(t, tc.file)
			if tc.file[:2] == "05" { // the gateway fixes long lines first
				var err error
				if in, _, err = mimeedit.FixLongLines(in); err != nil {
					t.Fatal(err)
				}
			}
			out, links, err := r.Rewrite(in)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range links {
				got = append(got, l.URL)
				if len(l.Token) != 22 {
					t.Errorf("token %q is not 128 bits in URL-safe base64", l.Token)
				}
			}
			if strings.Join(got, " ") != strings.Join(tc.urls, " ") {
				t.Fatalf("links %q, want %q", got, tc.urls)
			}
			before, after := decodedParts(t, in), decodedParts(t, out)
			changed := 0
			for k, v := range after {
				if v == before[k] {
					continue
				}
				changed++
				if strings.Contains(v, "descargas.ca.example/certificado") || strings.Contains(v, "certs.example/download") || strings.Contains(v, "emissao.ac.example/emitir") {
					t.Errorf("part %s still holds an issuer URL", k)
				}
				for _, m := range gateURL.FindAllStringSubmatch(v, -1) {
					if m[1] != links[0].Token {
						t.Errorf("part %s has token %s, want the one token of the link", k, m[1])
					}
				}
				if !gateURL.MatchString(v) {
					t.Errorf("part %s changed without a gate URL", k)
				}
			}
			if changed != tc.parts {
				t.Errorf("%d parts changed, want %d", changed, tc.parts)
			}
			for _, line := range bytes.Split(out, []byte("\r\n")) {
				if len(line) > 998 {
					t.Fatalf("line of %d octets after rewriting", len(line))
				}
			}
		})
	}
}

func TestRewriteKeepsAttachmentsAndTokensAreUnique(t *testing.T) {
	r := NewRewriter(gatePrefixes, "https://gate.ca.example")
	in := sample(t, "03-fr-attachment-b64-text.eml")
	out1, l1, err := r.Rewrite(in)
	if err != nil {
		t.Fatal(err)
	}
	_, l2, _ := r.Rewrite(in)
	if l1[0].Token == l2[0].Token {
		t.Fatal("two copies got the same token")
	}
	before, after := decodedParts(t, in), decodedParts(t, out1)
	for k, v := range before {
		if !strings.HasPrefix(strings.SplitN(k, " ", 2)[1], "text/") && after[k] != v {
			t.Errorf("attachment %s changed", k)
		}
	}
}

func TestRewriteWithoutGatedLinksIsIdentity(t *testing.T) {
	in := sample(t, "04-pt-token-transactional.eml")
	out, links, err := NewRewriter(gatePrefixes, "https://gate.ca.example").Rewrite(in)
	if err != nil || len(links) != 0 || !bytes.Equal(in, out) {
		t.Fatalf("no gated URL: links %v, err %v, identical %v", links, err, bytes.Equal(in, out))
	}
}

func TestReplaceEdges(t *testing.T) {
	r := NewRewriter([]string{"https://dl.example/get/"}, "https://g.example")
	tok := func(string) string { return "T" }
	for in, want := range map[string]string{
		"see https://dl.example/get/a?b=1.":                     "see https://g.example/d/T.",
		"(https://dl.example/get/a)":                            "(https://g.example/d/T)",
		"HTTPS://DL.EXAMPLE/get/x, then":                        "https://g.example/d/T, then",
		"<https://dl.example/get/x>":                            "<https://g.example/d/T>",
		"https://dl.example/other/x":                            "https://dl.example/other/x",
		"https://dl.example/get/":                               "https://g.example/d/T",
		"two https://dl.example/get/1 https://dl.example/get/2": "two https://g.example/d/T https://g.example/d/T",
	} {
		got, _ := r.replace([]byte(in), false, tok)
		if string(got) != want {
			t.Errorf("replace(%q) = %q, want %q", in, got, want)
		}
	}
	var seen []string
	r.replace([]byte(`<a href="https://dl.example/get/a?x=1&amp;y=2">`), true, func(u string) string { seen = append(seen, u); return "T" })
	if len(seen) != 1 || seen[0] != "https://dl.example/get/a?x=1&y=2" {
		t.Fatalf("HTML URL seen as %q, want entities decoded", seen)
	}
}

func FuzzRewrite(f *testing.F) {
	for _, n := range []string{"01-es-download-link-qp.eml", "02-fr-plaintext-pem-multi-rcpt.eml", "03-fr-attachment-b64-text.eml"} {
		f.Add(sample(f, n))
	}
	r := NewRewriter(gatePrefixes, "https://gate.ca.example")
	f.Fuzz(func(t *testing.T, msg []byte) {
		out, links, err := r.Rewrite(msg)
		if err != nil {
			return
		}
		if len(links) == 0 && !bytes.Equal(out, msg) {
			t.Fatal("changed a message without gated links")
		}
		for _, l := range links {
			if !bytes.Contains(out, []byte(l.Token)) && !strings.Contains(strings.Join(strings.Fields(string(out)), ""), l.Token) {
				// The token may be encoded (QP, base64): check the decoded text.
				found := false
				mimeedit.Walk(out, func(p *mimeedit.Part, d []byte) error {
					found = found || bytes.Contains(d, []byte(l.Token))
					return nil
				})
				if !found {
					t.Fatalf("token for %s not in the output", l.URL)
				}
			}
		}
	})
}

func TestRewriteOnlyTheIssuersOwnHost(t *testing.T) {
	r := NewRewriter([]string{"https://issuer.example"}, "https://g.example")
	var seen []string
	tok := func(u string) string { seen = append(seen, u); return "T" }
	for in, want := range map[string]string{
		"https://issuer.example/dl/1":           "https://g.example/d/T",
		"https://issuer.example@evil.example/x": "https://issuer.example@evil.example/x",
		"https://issuer.example.evil.example/x": "https://issuer.example.evil.example/x",
		"https://issuer.example:8443/x":         "https://issuer.example:8443/x",
	} {
		if got, _ := r.replace([]byte(in), false, tok); string(got) != want {
			t.Errorf("replace(%q) = %q, want %q", in, got, want)
		}
	}
	if len(seen) != 1 {
		t.Fatalf("gated %v, want only the issuer's own URL", seen)
	}
}

func TestReplaceHTMLEntitiesAroundURLs(t *testing.T) {
	r := NewRewriter([]string{"https://dl.example/get/"}, "https://g.example")
	var seen []string
	tok := func(u string) string { seen = append(seen, u); return "T" }
	got, _ := r.replace([]byte(`<p>https://dl.example/get/abc&nbsp;(7 days) <a href="https://dl.example/get/q?a=1&amp;b=2&#38;c=3">x</a></p>`), true, tok)
	want := `<p>https://g.example/d/T&nbsp;(7 days) <a href="https://g.example/d/T">x</a></p>`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if len(seen) != 2 || seen[0] != "https://dl.example/get/abc" || seen[1] != "https://dl.example/get/q?a=1&b=2&c=3" {
		t.Fatalf("URLs seen: %q", seen)
	}
}

// A copy's rewrite decodes only the text parts, where links are: a 20 MB
// attachment decoded for every recipient's copy cost 15 MB of garbage
// each. An attachment that cannot be decoded shows it: Rewrite used to
// fail on it, and must now pass it through byte for byte.
func TestRewriteDoesNotDecodeAttachments(t *testing.T) {
	att := bytes.Repeat([]byte(strings.Repeat("QUJD", 19)+"\r\n"), 1000)
	att = append(att, "!!not base64!!\r\n"...)
	msg := []byte("From: <certificados@ca.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nhttps://descargas.ca.example/certificado/1\r\n" +
		"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n" + string(att) + "--b--\r\n")
	r := NewRewriter(gatePrefixes, "https://gate.ca.example")
	out, links, err := r.Rewrite(msg)
	if err != nil {
		t.Fatalf("the attachment was decoded: %v", err)
	}
	if len(links) != 1 || !bytes.HasSuffix(out, append(att, "--b--\r\n"...)) {
		t.Fatalf("%d links gated, or the attachment changed", len(links))
	}
}
