package main

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The demo wires the whole daemon from a written configuration, submits a
// wave big enough to push the simulated Microsoft over its rate, reads a
// message back through the API, reports where the seed copies landed, and
// tells the closed loop: Microsoft throttled, certgate slowed the outlook
// lane, which climbed back, while urgent mail kept flowing and no message
// was lost; and the daemon's DNS self-check passes on the demo's zone.
func TestDemoEndToEnd(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"demo", "--messages", "150", "--urgent", "5"}, &out, &errOut); code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	text := out.String()
	// 150 bulk + 5 urgent recipients + the DSN, and a copy of one bulk
	// mail in 30 (5) to each of the 3 seed mailboxes; the refused address
	// is not delivered.
	for _, re := range []string{
		`DKIM:\s+171 of 171 delivered copies verified at the receiving side \(15 of them seed copies\)`,
		`books:\s+156 recipients accepted = 155 delivered \+ 1 bounced \(one DSN each\) \+ 0 queued: balanced\n\s+\+ 15 seed copies, certgate's own: 15 delivered \+ 0 queued`,
		`seed copies 15/15  queued: 0\n`,
		`urgent  p50 \d`,
		`issuer  http://127\.0\.0\.1:\d+/kit/issuer  \(es [\d.]+ KB, pt-BR [\d.]+ KB, fr [\d.]+ KB, en [\d.]+ KB\)`,
		`portal  http://127\.0\.0\.1:\d+/kit/portal  \(es [\d.]+ KB, pt-BR`,
		// The daemon's DNS self-check read the demo's zone, not the
		// machine's resolver, and found every From domain ready for bulk.
		`\nDNS self-check \(GET /api/v1/dns\): the daemon read the demo's zone from 127\.0\.0\.1:\d+ as receivers would \([1-9]\d* queries\)\n` +
			`  4 From domains: [1-9]\d* passed, \d+ warnings, 0 failed, \d+ advice.*\n` +
			`  bulk senders: Gmail met, Yahoo met, Microsoft met\n` +
			`  the table and the records to publish: certgate dns check --config \S+/certgate\.yaml `,
		// A portal's JSON send: durable at the 202, once for a retry,
		// and the certificate attached and signed at each receiver.
		`POST /api/v1/send -> 202 in \d+ms: message \w+ for 2 recipients`,
		`the same call again \(same Idempotency-Key\) -> 202, the first answer replayed`,
		`ana\.gomez@gmail\.com\s+at google\s+attachment ana\.example\.com\.crt \(application/x-pem-file, \d+ bytes\), DKIM pass`,
		`it\.contoso@outlook\.com\s+at microsoft attachment ana\.example\.com\.crt \(application/x-pem-file, \d+ bytes\), DKIM pass`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("demo output does not match %q:\n%s", re, text)
		}
	}
	checkPlacement(t, text, 5)
	checkClosedLoop(t, text)
	checkClusterStep(t, text)
	for _, want := range []string{
		"accepted:   155 messages, 156 recipients",
		"no.such.user@contoso.example     bounced",
		"250 2.0.0",
		`recipient opens it (French browser):   "Ce lien n’est pas encore actif"`,
		"/release -> 200 OK",
		`recipient opens it again:               "Votre téléchargement est prêt"`,
		"and gets the certificate: -----BEGIN CERTIFICATE-----",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, text)
		}
	}
}

// checkClosedLoop finds the closed loop's story in the demo's output, in
// its order: Microsoft refused with 451 4.7.650, certgate slowed the
// outlook lane by its rule, Microsoft calmed down, the lane climbed back
// to its rate (the demo waits for it), and the urgent mail to Microsoft
// was all delivered meanwhile.
func checkClosedLoop(t *testing.T, text string) {
	t.Helper()
	_, section, ok := strings.Cut(text, "\nclosed loop at Microsoft (outlook lane;")
	if !ok {
		t.Fatalf("no closed loop section:\n%s", text)
	}
	section, _, _ = strings.Cut(section, "\n\n")
	at := 0
	for _, re := range []string{
		`\+\d+\.\ds\s+Microsoft answered 451 4\.7\.650 \(rate limited for IP reputation\): [1-9]\d* times`,
		`\+\d+\.\ds\s+certgate slowed the outlook lane 15/s -> 7\.5/s \(rule outlook-ip-reputation\)`,
		`\+\d+\.\ds\s+Microsoft calm again`,
		`\+\d+\.\ds\s+slowdown over; the rate climbs back: .*15/s at \+\d+\.\ds\n`,
	} {
		loc := regexp.MustCompile(re).FindStringIndex(section[at:])
		if loc == nil {
			t.Errorf("the closed loop lacks %q after %q:\n%s", re, section[:at], section)
			continue
		}
		at += loc[1]
	}
	if m := regexp.MustCompile(`urgent tokens to Microsoft meanwhile: (\d+) of (\d+) delivered, in the inbox`).FindStringSubmatch(section); m == nil || m[1] != m[2] || m[1] == "0" {
		t.Errorf("urgent mail to Microsoft not all delivered to the inbox:\n%s", section)
	}
	for _, bad := range []string{"still pushed", "still slowed", "refused nothing"} {
		if strings.Contains(section, bad) {
			t.Errorf("the closed loop did not close (%q):\n%s", bad, section)
		}
	}
}

// With --faults the simulated receivers greylist and refuse for a while;
// every copy still lands, the books balance, and every seed copy is found.
func TestDemoWithFaults(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"demo", "--messages", "25", "--urgent", "2", "--faults"}, &out, &errOut); code != 0 {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	text := out.String()
	for _, re := range []string{
		`faults:\s+yahoo\s+greylisted [1-9][0-9]* \(passed [1-9]`,
		`books:\s+28 recipients accepted = 27 delivered \+ 1 bounced \(one DSN each\) \+ 0 queued: balanced\n\s+\+ 3 seed copies, certgate's own: 3 delivered \+ 0 queued`,
		`DKIM:\s+31 of 31 delivered copies verified`,
	} {
		if !regexp.MustCompile(re).MatchString(text) {
			t.Errorf("demo output does not match %q:\n%s", re, text)
		}
	}
	checkPlacement(t, text, 1)
}

// checkPlacement finds the placement section with a row for each seed's
// provider, each of its n copies found in the inbox or junk, none pending
// or missing, and a verdict of Microsoft's.
func checkPlacement(t *testing.T, text string, n int) {
	t.Helper()
	_, section, ok := strings.Cut(text, "\nplacement (seed copies, watched over IMAP IDLE)\n")
	if !ok {
		t.Fatalf("no placement section:\n%s", text)
	}
	section, _, _ = strings.Cut(section, "\n\n")
	row := regexp.MustCompile(`(?m)^  (\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+%)\s+(\S.*)$`)
	seen := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(section, -1) {
		copies, inbox, junk, missing := atoi(m[2]), atoi(m[3]), atoi(m[4]), atoi(m[5])
		seen[m[1]] = true
		if copies != n || inbox+junk != n || missing != 0 {
			t.Errorf("placement at %s: %d copies, %d inbox, %d junk, %d missing; want %d, all found", m[1], copies, inbox, junk, missing, n)
		}
	}
	for _, p := range []string{"gmail", "outlook", "yahoo"} {
		if !seen[p] {
			t.Errorf("placement has no row for %s:\n%s", p, section)
		}
	}
	if strings.Contains(section, "pending") || strings.Contains(section, "(queued)") {
		t.Errorf("copies still pending:\n%s", section)
	}
	if !regexp.MustCompile(`what Microsoft wrote into a copy it filed in (inbox|junk): dkim=pass dmarc=pass spf=none, SCL [15] `).MatchString(section) {
		t.Errorf("no verdict of Microsoft's:\n%s", section)
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(err)
	}
	return n
}

// checkClusterStep: with PostgreSQL and Redis here, two nodes took the
// wave, one stopped in the middle holding mail, and every mail arrived
// once at the gmail lane's rate, not twice it; without them the step
// says so (a failure when CERTGATE_E2E=1 demands the whole suite).
func checkClusterStep(t *testing.T, text string) {
	t.Helper()
	if strings.Contains(text, "the cluster: two certgate nodes") && strings.Contains(text, "  skipped: ") {
		e2eMissing(t, "the demo's cluster step: PostgreSQL or redis-server is not installed")
		return
	}
	m := regexp.MustCompile(`node-1 stopped with (\d+) copies still queued, and handed them to node-2\n` +
		`  200 of 200 delivered, 200 of them exactly once; the last [\d.]+m?s after node-1 stopped\n` +
		`  the gmail lane held across both nodes: (\d+)/min against its 1800/min`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("the demo's cluster step did not tell its story:\n%s", text)
	}
	if held, _ := strconv.Atoi(m[1]); held == 0 {
		t.Errorf("node-1 stopped holding nothing: the handover was not shown")
	}
	if rate, _ := strconv.Atoi(m[2]); rate > 1800*105/100 {
		t.Errorf("the two nodes sent at %d/min, over the lane's 1800/min", rate)
	}
}
