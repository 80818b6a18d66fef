package placement

import (
	"strings"
	"testing"
)

func header(lines ...string) []byte {
	return []byte(strings.Join(lines, "\r\n") + "\r\n\r\n")
}

// What Gmail writes: Authentication-Results only, with comments; a
// forged field lower down (the sender's) is not the receiver's.
func TestVerdictsGmail(t *testing.T) {
	v, err := ParseVerdicts(header(
		"Delivered-To: certgate.seed1@gmail.com",
		"Authentication-Results: mx.google.com;",
		"       dkim=pass header.i=@ca.example header.s=cg2026 header.b=Qm9vb2s;",
		"       dkim=fail (bad signature; body hash did not verify) header.i=@ca.example header.s=old;",
		"       spf=pass (google.com: domain of certificados@ca.example designates 192.0.2.10 as permitted sender) smtp.mailfrom=certificados@ca.example;",
		"       dmarc=pass (p=QUARANTINE sp=NONE dis=NONE) header.from=ca.example",
		"Authentication-Results: forged.example; dkim=pass; spf=pass; dmarc=pass",
		"From: <certificados@ca.example>",
	))
	if err != nil {
		t.Fatal(err)
	}
	want := Verdicts{AuthServ: "mx.google.com", SPF: "pass", DKIM: "pass", DMARC: "pass", SCL: -1, BCL: -1}
	if v != want {
		t.Fatalf("got %+v\nwant %+v", v, want)
	}
}

// A receiver's failures are reported as failures, whatever a forged
// field further down says.
func TestVerdictsTopmostFieldOnly(t *testing.T) {
	v, err := ParseVerdicts(header(
		"Authentication-Results: mx.example.net 1; spf=softfail smtp.mailfrom=ca.example; DKIM=FAIL (no key) header.d=ca.example; dmarc=fail action=quarantine header.from=ca.example; arc=none",
		"Authentication-Results: mx.example.net; dkim=pass; dmarc=pass",
	))
	if err != nil {
		t.Fatal(err)
	}
	if v.SPF != "softfail" || v.DKIM != "fail" || v.DMARC != "fail" || v.ARC != "none" || v.AuthServ != "mx.example.net" {
		t.Fatalf("%+v", v)
	}
}

// What Exchange Online writes: its reports, and where it filed the copy.
func TestVerdictsMicrosoft(t *testing.T) {
	v, err := ParseVerdicts(header(
		"Authentication-Results: spf=pass (sender IP is 192.0.2.10)",
		" smtp.mailfrom=ca.example; dkim=pass (signature was verified)",
		" header.d=ca.example;dmarc=pass action=none header.from=ca.example;compauth=pass",
		" reason=100",
		"X-Forefront-Antispam-Report: CIP:192.0.2.10;CTRY:ES;LANG:es;SCL:5;SRV:;IPV:NLI;SFV:SPM;H:out.ca.example;PTR:out.ca.example;CAT:BULK;SFS:(13230040)(4636009)(376014);DIR:INB;",
		"X-Microsoft-Antispam: BCL:7;ARA:13230040|4636009;",
		"X-Microsoft-Antispam-Mailbox-Delivery: ucf:0;jmr:0;auth:0;dest:J;ENG:(910001)(944506478)(944626604);",
	))
	if err != nil {
		t.Fatal(err)
	}
	// Exchange leaves out the authserv-id and starts with a result.
	if v.SCL != 5 || v.SFV != "SPM" || v.CAT != "BULK" || v.BCL != 7 || v.Dest != "junk" ||
		v.AuthServ != "" || v.SPF != "pass" || v.DKIM != "pass" || v.DMARC != "pass" {
		t.Fatalf("%+v", v)
	}
}

func TestVerdictsSpamAssassin(t *testing.T) {
	v, err := ParseVerdicts(header(
		"X-Spam-Flag: YES",
		"X-Spam-Status: Yes, score=7.1 required=5.0 tests=BAYES_99,HTML_MESSAGE",
		"\tautolearn=no autolearn_force=no version=4.0.0",
	))
	if err != nil {
		t.Fatal(err)
	}
	if v.Spam != "yes" || v.SpamScore == nil || *v.SpamScore != 7.1 || v.SCL != -1 || v.BCL != -1 {
		t.Fatalf("%+v", v)
	}
	v, _ = ParseVerdicts(header("X-Spam-Status: No, score=-0.1 required=5.0"))
	if v.Spam != "no" || v.SpamScore == nil || *v.SpamScore != -0.1 {
		t.Fatalf("%+v", v)
	}
}

// Hostile values are left out, not trusted: an SCL out of range, a score
// that is not a number, an unterminated comment.
func TestVerdictsHostileValues(t *testing.T) {
	v, err := ParseVerdicts(header(
		"Authentication-Results: mx.example; dkim=pass (unterminated; spf=pass",
		"X-Forefront-Antispam-Report: SCL:99999999999999999999;SFV:NSPM",
		"X-Microsoft-Antispam: BCL:-5",
		"X-Spam-Status: Yes, score=NaN",
	))
	if err != nil {
		t.Fatal(err)
	}
	if v.DKIM != "pass" || v.SPF != "" || v.SCL != -1 || v.BCL != -1 || v.SpamScore != nil || v.Spam != "yes" {
		t.Fatalf("%+v", v)
	}
	if _, err := ParseVerdicts([]byte("not a header\r\n")); err == nil {
		t.Fatal("a line that is no field was read as a header")
	}
}

func TestSplitOutsideComments(t *testing.T) {
	got := splitOutsideComments(`a; b (c; (d;) e); "f;g"; h`, ';', 10)
	want := []string{"a", ` b (c; (d;) e)`, ` "f;g"`, " h"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("%q", got)
	}
	if got := splitOutsideComments("a;b;c;d", ';', 2); len(got) != 2 {
		t.Fatalf("%q: more parts than asked for", got)
	}
}

func FuzzParseVerdicts(f *testing.F) {
	f.Add(header("Authentication-Results: mx.google.com; dkim=pass (a; b) header.i=@ca.example; spf=pass; dmarc=pass"))
	f.Add(header("X-Forefront-Antispam-Report: SCL:5;SFV:SPM;CAT:BULK;", "X-Microsoft-Antispam: BCL:7;",
		"X-Microsoft-Antispam-Mailbox-Delivery: dest:I;"))
	f.Add(header("X-Spam-Flag: YES", "X-Spam-Status: Yes, score=7.1 required=5.0"))
	f.Fuzz(func(t *testing.T, h []byte) {
		v, err := ParseVerdicts(h)
		if err != nil {
			return
		}
		if v.SCL < -1 || v.SCL > 9 || v.BCL < -1 || v.BCL > 9 {
			t.Fatalf("SCL %d, BCL %d out of range", v.SCL, v.BCL)
		}
		for _, r := range []string{v.SPF, v.DKIM, v.DMARC, v.ARC, v.AuthServ} {
			if r != strings.ToLower(r) || strings.ContainsAny(r, " \t\r\n") {
				t.Fatalf("result %q is not one lower-case token", r)
			}
			if len(r) > maxFieldLen {
				t.Fatalf("result of %d bytes", len(r))
			}
		}
		if v.Spam != "" && v.Spam != "yes" && v.Spam != "no" {
			t.Fatalf("spam %q", v.Spam)
		}
	})
}
