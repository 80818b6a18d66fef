package testdovecot

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// The private Dovecot serves its users INBOX and a \Junk mailbox, takes
// APPEND, and keeps the mail across a restart.
func TestDovecot(t *testing.T) {
	if why := Missing(); why != "" {
		if os.Getenv("CERTGATE_E2E") == "1" {
			t.Fatal(why)
		}
		t.Skip("skipping: " + why)
	}
	s, err := Start(t.TempDir(), []User{{"seed1@seeds.example", "pw1"}, {"seed2@seeds.example", "pw2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	login := func() *imapclient.Client {
		c, err := imapclient.DialInsecure(s.Addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Login("seed1@seeds.example", "pw1").Wait(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := login()
	boxes, err := c.List("", "*", nil).Collect()
	if err != nil {
		t.Fatal(err)
	}
	junk := false
	for _, b := range boxes {
		junk = junk || b.Mailbox == "Junk" && slices.Contains(b.Attrs, imap.MailboxAttrJunk)
	}
	if !junk {
		t.Fatalf("no \\Junk mailbox: %+v", boxes)
	}
	msg := "From: <a@example.com>\r\nSubject: hi\r\n\r\nbody\r\n"
	ap := c.Append("Junk", int64(len(msg)), nil)
	ap.Write([]byte(msg))
	ap.Close()
	if _, err := ap.Wait(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if err := s.Restart(); err != nil {
		t.Fatal(err)
	}
	c = login()
	defer c.Close()
	sel, err := c.Select("Junk", nil).Wait()
	if err != nil || sel.NumMessages != 1 {
		t.Fatalf("Junk after a restart: %+v, %v\n%s", sel, err, s.Log())
	}
	// Errors of the auth process's link to anvil, which a restart cuts,
	// are Dovecot's own; any other is ours.
	for _, line := range strings.Split(s.Log(), "\n") {
		if strings.Contains(line, "Error") && !strings.Contains(line, "anvil") {
			t.Errorf("dovecot logged an error: %s", line)
		}
	}
}
