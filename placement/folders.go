package placement

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
)

// Folder roles a watcher connection plays: each watches one mailbox, since
// IDLE reports on the selected mailbox only (RFC 2177).
type role string

const (
	roleInbox role = "inbox"
	roleJunk  role = "junk"
)

// knownJunkNames are the junk folders of servers that do not mark theirs
// with SPECIAL-USE (RFC 6154): Exchange Online, Yahoo, older Zimbra and
// Dovecot set-ups, and the localized names their users see. Compared
// case-insensitively with the full name and with its last level.
var knownJunkNames = []string{
	"[Gmail]/Spam", "[Google Mail]/Spam",
	"Junk Email", "Junk E-mail", "Junk", "Spam", "Bulk", "Bulk Mail",
	"Correo no deseado", "Spam-Ordner", "Courrier indésirable", "Lixo eletrônico",
	"Posta indesiderata", "Ongewenste e-mail", "Skräppost",
}

// maxListed bounds the mailboxes read from one LIST: a hostile server
// must not make the watcher hold an endless list.
const maxListed = 10000

// junkFolder finds the seed mailbox's junk folder: the configured name,
// or with "auto" the mailbox marked \Junk, else the first known name.
func junkFolder(c *imapclient.Client, configured string) (string, error) {
	// RFC 6154 2: a server must send the attributes when asked with
	// RETURN (SPECIAL-USE); a plain LIST may leave them out.
	var opts *imap.ListOptions
	if c.Caps().Has(imap.CapSpecialUse) {
		opts = &imap.ListOptions{ReturnSpecialUse: true}
	}
	cmd := c.List("", "*", opts)
	defer cmd.Close()
	var names []string
	marked := ""
	for n := 0; n < maxListed; n++ {
		d := cmd.Next()
		if d == nil {
			break
		}
		if slices.Contains(d.Attrs, imap.MailboxAttrNoSelect) || slices.Contains(d.Attrs, imap.MailboxAttrNonExistent) {
			continue
		}
		names = append(names, d.Mailbox)
		if marked == "" && slices.Contains(d.Attrs, imap.MailboxAttrJunk) {
			marked = d.Mailbox
		}
	}
	if err := cmd.Close(); err != nil {
		return "", fmt.Errorf("LIST: %w", err)
	}
	if configured != "" && configured != "auto" {
		if !slices.Contains(names, configured) {
			return "", fmt.Errorf("the junk folder %q does not exist (seeds.mailboxes[].junk)", configured)
		}
		return configured, nil
	}
	if marked != "" {
		return marked, nil
	}
	for _, known := range knownJunkNames {
		for _, n := range names {
			if strings.EqualFold(n, known) || strings.EqualFold(lastLevel(n), known) {
				return n, nil
			}
		}
	}
	return "", fmt.Errorf("no junk folder: none is marked \\Junk and none has a known name; set seeds.mailboxes[].junk")
}

// specialFolder is the folder marked with a SPECIAL-USE attribute, or ""
// for none.
func specialFolder(c *imapclient.Client, attr imap.MailboxAttr) (string, error) {
	cmd := c.List("", "*", &imap.ListOptions{ReturnSpecialUse: true})
	defer cmd.Close()
	found := ""
	for n := 0; n < maxListed; n++ {
		d := cmd.Next()
		if d == nil {
			break
		}
		if found == "" && slices.Contains(d.Attrs, attr) {
			found = d.Mailbox
		}
	}
	return found, cmd.Close()
}

// otherFolders lists the mailbox's selectable folders but INBOX, the junk
// folder and the ones no copy is filed in (\Sent, \Drafts), at most
// maxElsewhereFolders.
func otherFolders(c *imapclient.Client, configured string) ([]string, error) {
	junk, err := junkFolder(c, configured)
	if err != nil {
		return nil, err
	}
	cmd := c.List("", "*", nil)
	defer cmd.Close()
	var out []string
	for n := 0; n < maxListed && len(out) < maxElsewhereFolders; n++ {
		d := cmd.Next()
		if d == nil {
			break
		}
		skip := strings.EqualFold(d.Mailbox, "INBOX") || d.Mailbox == junk
		for _, a := range d.Attrs {
			switch a {
			case imap.MailboxAttrNoSelect, imap.MailboxAttrNonExistent, imap.MailboxAttrSent, imap.MailboxAttrDrafts:
				skip = true
			}
		}
		if !skip {
			out = append(out, d.Mailbox)
		}
	}
	return out, cmd.Close()
}

// lastLevel is a mailbox name's last level, whatever the hierarchy
// delimiter ("INBOX.Junk", "INBOX/Junk").
func lastLevel(name string) string {
	if i := strings.LastIndexAny(name, "./"); i >= 0 {
		return name[i+1:]
	}
	return name
}

// folderClass is the placement a copy found in mailbox has: what the
// watcher's connection watches, or a Gmail tab within the inbox.
func folderClass(r role, tab string) string {
	switch {
	case r == roleJunk:
		return store.FolderJunk
	case tab != "" && tab != "primary":
		return "tab:" + tab
	default:
		return store.FolderInbox
	}
}

// Check is what `certgate seeds check` reports of one seed mailbox.
type Check struct {
	Seed       string
	Err        error // nil: logged in and found both folders
	IDLE       bool
	SpecialUse bool
	Gmail      bool   // X-GM-EXT-1: tabs are told apart
	Junk       string // the junk folder the watcher would watch
	Messages   [2]uint32
}

// CheckMailbox logs in to a seed mailbox and finds what the watcher
// needs: its capabilities, INBOX and the junk folder.
func CheckMailbox(ctx context.Context, connect Connector, m config.SeedMailbox) Check {
	out := Check{Seed: m.Name}
	c, err := connect(ctx, m, nil)
	if err != nil {
		out.Err = err
		return out
	}
	defer c.Close()
	defer context.AfterFunc(ctx, func() { c.Close() })() // go-imap has no deadline of its own
	caps := c.Caps()
	out.IDLE = caps.Has(imap.CapIdle) || caps.Has(imap.CapIMAP4rev2)
	out.SpecialUse = caps.Has(imap.CapSpecialUse)
	out.Gmail = caps.Has("X-GM-EXT-1")
	if out.Junk, out.Err = junkFolder(c, m.Junk); out.Err != nil {
		return out
	}
	for i, name := range []string{"INBOX", out.Junk} {
		st, err := c.Status(name, &imap.StatusOptions{NumMessages: true}).Wait()
		if err != nil {
			out.Err = fmt.Errorf("STATUS %s: %w", name, err)
			return out
		}
		if st.NumMessages != nil {
			out.Messages[i] = *st.NumMessages
		}
	}
	out.Err = c.Logout().Wait()
	return out
}
