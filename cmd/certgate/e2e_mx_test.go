package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The receiving side of the end-to-end suite: a private Postfix instance as
// the MX of recv.example, so that certgate's SMTP client meets a real MTA
// (STARTTLS, pipelining, its reply texts) and not only go-smtp.
const (
	e2eRecvDomain = "recv.example"
	e2eRecvMXHost = "mx.recv.example"
	e2eRecvMXIP   = "127.0.0.2" // the simulated MX has 127.0.0.1 on the same port
)

// e2eStartPostfixMX starts Postfix as the MX of recv.example on ip:port:
// STARTTLS offered (certificate for mx.recv.example), mailboxes ana and
// busy as maildirs under its directory, busy answered 450 by an access
// table, any other recipient unknown (550 5.1.1 at RCPT).
func e2eStartPostfixMX(t *testing.T, ip string, port int, certFile, keyFile string) *e2ePostfix {
	t.Helper()
	pu, err := user.Lookup("postfix")
	if err != nil {
		e2eMissing(t, "no postfix user: %v", err)
	}
	var mail string
	p := e2eStartPostfixInstance(t, ip, port, e2eRecvMXHost, func(conf string) ([]string, []string) {
		mail = filepath.Join(filepath.Dir(conf), "mail")
		if err := os.MkdirAll(mail, 0o755); err != nil {
			t.Fatal(err)
		}
		uid, gid := mustAtoi(t, pu.Uid), mustAtoi(t, pu.Gid)
		if err := os.Chown(mail, uid, gid); err != nil {
			t.Fatal(err)
		}
		files := map[string]string{
			"vmailbox": "ana@" + e2eRecvDomain + " " + e2eRecvDomain + "/ana/\nbusy@" + e2eRecvDomain + " " + e2eRecvDomain + "/busy/\n",
			"access":   "busy@" + e2eRecvDomain + " 450 4.2.1 Mailbox busy, try again later\n",
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(conf, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return []string{
				"mydestination =",
				"virtual_mailbox_domains = " + e2eRecvDomain,
				"virtual_mailbox_base = " + mail,
				"virtual_mailbox_maps = texthash:" + filepath.Join(conf, "vmailbox"),
				fmt.Sprintf("virtual_uid_maps = static:%d", uid),
				fmt.Sprintf("virtual_gid_maps = static:%d", gid),
				"virtual_minimum_uid = 1",
				"smtpd_tls_security_level = may",
				"smtpd_tls_cert_file = " + certFile,
				"smtpd_tls_key_file = " + keyFile,
				"smtpd_tls_loglevel = 1",
				"smtpd_tls_received_header = yes",
				"smtpd_recipient_restrictions = check_recipient_access texthash:" + filepath.Join(conf, "access") +
					", permit_mynetworks, reject_unauth_destination",
			}, []string{
				"virtual   unix - n n - - virtual",
			}
	})
	return p
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// e2eRecipientState is one recipient as the API shows it.
type e2eRecipientState struct {
	Address   string `json:"address"`
	State     string `json:"state"`
	Attempts  int    `json:"attempts"`
	LastCode  int    `json:"last_code"`
	LastReply string `json:"last_reply"`
}

// waitRecipients polls the API for message id until done holds of its
// recipients, and returns them.
func (s *e2eSetup) waitRecipients(t *testing.T, id string, done func(map[string]e2eRecipientState) bool) map[string]e2eRecipientState {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := s.api(t, "/api/v1/messages/"+id, s.token)
		var v struct {
			Recipients []e2eRecipientState `json:"recipients"`
		}
		got := map[string]e2eRecipientState{}
		if code == http.StatusOK && json.Unmarshal(body, &v) == nil {
			for _, r := range v.Recipients {
				got[r.Address] = r
			}
			if done(got) {
				return got
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s: recipients did not settle within 60s (last %d):\n%s", id, code, body)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestE2EPostfixReceivingMX delivers a sample certificate mail through the
// certgate binary to a real Postfix MX: the copy for a mailbox lands in
// its maildir over STARTTLS with DKIM that python3-dkim verifies; a 450
// from Postfix's access table is deferred and retried, never bounced; and
// Postfix's 550 for an unknown user bounces with a DSN to the sender.
func TestE2EPostfixReceivingMX(t *testing.T) {
	e2eStart(t)
	requireTool(t, "swaks")
	requireTool(t, "postfix")
	py := requirePythonDKIM(t)
	e2eRequirePostfixPrivileges(t)
	s := newE2ESetupWith(t, func(s *e2eSetup) {
		s.extraMX = map[string]string{e2eRecvDomain: e2eRecvMXHost, "ca.example": s.mxHost}
		s.extraHosts = map[string]string{e2eRecvMXHost: e2eRecvMXIP}
	})
	_, mxPort, err := net.SplitHostPort(s.mx.Addr())
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, _ := e2eSelfSigned(t, s.dir, e2eRecvMXHost)
	for _, f := range []string{certFile, keyFile} {
		os.Chmod(f, 0o644) // Postfix's smtpd reads them as its own user
	}
	mx := e2eStartPostfixMX(t, e2eRecvMXIP, mustAtoi(t, mxPort), certFile, keyFile)

	m := s.samples[0]
	ana, busy, nobody := "ana@"+e2eRecvDomain, "busy@"+e2eRecvDomain, "nobody@"+e2eRecvDomain
	out, code := s.swaks(t, s.smtpAddr, "--from", m.From, "--to", ana+","+busy+","+nobody, "--data", "@"+m.Path,
		"--tls", "--auth", "PLAIN", "--auth-user", s.username, "--auth-password", s.password)
	if code != 0 {
		t.Fatalf("swaks: exit %d\n%s", code, out)
	}
	queueID := s.findMessage(t, ana)

	// ana delivered, nobody bounced; busy deferred at least twice, still queued.
	got := s.waitRecipients(t, queueID, func(r map[string]e2eRecipientState) bool {
		return r[ana].State == "delivered" && r[nobody].State == "bounced" && r[busy].Attempts >= 2
	})
	if b := got[busy]; b.State != "queued" || b.LastCode != 450 || !strings.Contains(b.LastReply, "4.2.1") {
		t.Errorf("busy: %+v, want queued after Postfix's 450 4.2.1", b)
	}
	if n := got[nobody]; n.LastCode != 550 || !strings.Contains(n.LastReply, "5.1.1") {
		t.Errorf("nobody: %+v, want bounced with Postfix's 550 5.1.1", n)
	}

	// The DSN for nobody reaches the sender's MX (the simulated one).
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.mx.WaitFor(ctx, 1); err != nil {
		t.Fatalf("no DSN at the sender's MX: %v", err)
	}
	dsn := string(s.mx.Messages()[0].Data)
	for _, want := range []string{"Final-Recipient: rfc822; " + nobody, "Status: 5.1.1", "Remote-MTA: dns; " + e2eRecvMXHost} {
		if !strings.Contains(dsn, want) {
			t.Errorf("the DSN lacks %q", want)
		}
	}

	// ana's copy: in the maildir, received over TLS, DKIM verified.
	files, _ := filepath.Glob(filepath.Join(mx.dir, "mail", e2eRecvDomain, "ana", "new", "*"))
	if len(files) != 1 {
		t.Fatalf("%d files in ana's maildir, want 1", len(files))
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "(using TLS") {
		t.Errorf("Postfix's Received field does not show TLS:\n%s", data[:min(len(data), 600)])
	}
	verifier, err := filepath.Abs("testdata/e2e/dkimverify.py")
	if err != nil {
		t.Fatal(err)
	}
	domain := m.From[strings.LastIndexByte(m.From, '@')+1:]
	var want []string
	for _, k := range s.keys {
		if k.Domain == domain {
			want = append(want, k.e2eSigAlg())
		}
	}
	slices.Sort(want)
	s.checkPythonDKIM(t, py, verifier, files[0], "ana's copy at Postfix", domain, want)
}

// findMessage is the id of the one message the API finds for rcpt.
func (s *e2eSetup) findMessage(t *testing.T, rcpt string) string {
	t.Helper()
	code, body := s.api(t, "/api/v1/messages?recipient="+url.QueryEscape(rcpt), s.token)
	var v struct {
		Messages []struct {
			ID string `json:"id"`
		} `json:"messages"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &v) != nil || len(v.Messages) != 1 {
		t.Fatalf("API search for %s: %d\n%s", rcpt, code, body)
	}
	return v.Messages[0].ID
}
