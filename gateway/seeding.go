package gateway

import (
	"fmt"

	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/mimeedit"
	"github.com/certgate/certgate/store"
)

// SeedMailbox is a seed mailbox as the preparer needs it: where a seed
// copy goes, and the name its placement is recorded under.
type SeedMailbox struct {
	Name     string
	Address  string
	Provider string // the lane it measures
}

// Seeds are the configured seed mailboxes, looked up by address too, so
// that a customer list holding a seed address is tracked like a seed copy.
type Seeds struct {
	list      []SeedMailbox
	byAddress map[string]SeedMailbox // by lower-cased address
}

// NewSeeds indexes the seed mailboxes of the configuration.
func NewSeeds(mailboxes []config.SeedMailbox) *Seeds {
	s := &Seeds{byAddress: map[string]SeedMailbox{}}
	for _, m := range mailboxes {
		sm := SeedMailbox{Name: m.Name, Address: m.Address, Provider: m.Provider}
		s.list = append(s.list, sm)
		s.byAddress[strings.ToLower(m.Address)] = sm
	}
	return s
}

// Len is how many seed mailboxes there are; a nil Seeds has none.
func (s *Seeds) Len() int {
	if s == nil {
		return 0
	}
	return len(s.list)
}

// at returns the seed mailbox at address; ok false for none.
func (s *Seeds) at(address string) (SeedMailbox, bool) {
	if s == nil {
		return SeedMailbox{}, false
	}
	sm, ok := s.byAddress[strings.ToLower(address)]
	return sm, ok
}

// seedClock is a tenant's continuous seeding (tenants[].seeding): one of
// its bulk messages is seeded every `every` bulk messages or `interval`,
// whichever comes first, while it sends. The first bulk message of a wave
// is seeded, since the interval has passed since the last.
type seedClock struct {
	every    int
	interval time.Duration

	mu    sync.Mutex
	count int       // bulk messages since the last seeded one
	last  time.Time // when the last one was seeded; zero before any
}

func newSeedClock(s *config.Seeding) *seedClock {
	if s == nil {
		return nil
	}
	return &seedClock{every: s.Every, interval: s.Interval.D()}
}

// due counts one bulk message and reports whether it is to be seeded.
func (c *seedClock) due(now time.Time) bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.count++
	if c.count < c.every && !c.last.IsZero() && now.Sub(c.last) < c.interval {
		return false
	}
	c.count, c.last = 0, now
	return true
}

// retry makes the next bulk message due: the one due could not be seeded.
func (c *seedClock) retry() {
	c.mu.Lock()
	c.last = time.Time{}
	c.mu.Unlock()
}

// seedHeader is the message's header without To, read once for all the
// seed copies (seedMessage adds each one's).
func seedHeader(h *mimeedit.Header) (*mimeedit.Header, error) {
	sh, err := mimeedit.ParseHeader(h.Bytes())
	if err != nil {
		return nil, err
	}
	sh.Del("To")
	return sh, nil
}

// seedMessage is the message addressed to one seed: its To names the
// seed, so the copy does not look like a Bcc to the receiver's filters.
// It is signed after this change, like any copy. sh is left as it was.
func seedMessage(sh *mimeedit.Header, body []byte, address string) ([]byte, error) {
	if err := sh.Add("To", "<"+address+">"); err != nil {
		return nil, err
	}
	defer sh.Del("To")
	return joinHeader(sh.Bytes(), body), nil
}

// addSeedCopies appends a copy of the message for every seed mailbox that
// is not already a recipient: same content but for To, its own tracking
// id, links and signature.
func (p *Preparer) addSeedCopies(out *Prepared, env *Envelope, h *mimeedit.Header, body []byte, state store.State,
	now time.Time, seal func([]byte) ([]byte, error)) error {
	seeds := p.seeds.Load()
	have := map[string]bool{}
	for _, rc := range out.Rcpts {
		if rc.Seed != "" {
			have[rc.Seed] = true
		}
	}
	sh, err := seedHeader(h)
	if err != nil {
		return mimeError(err)
	}
	first := true
	for _, sm := range seeds.list {
		if have[sm.Name] {
			continue
		}
		msg, err := seedMessage(sh, body, sm.Address)
		if err != nil {
			return mimeError(err)
		}
		if first {
			first = false
			total := len(msg) * (seeds.Len() - len(have))
			if total > maxGatedExpansion {
				return newReply(552, smtp.EnhancedCode{5, 3, 4}, "size", fmt.Sprintf(
					"A copy for each of %d seed mailboxes of %d KB would exceed %d MB; test a smaller message",
					seeds.Len()-len(have), len(msg)>>10, maxGatedExpansion>>20))
			}
			if err := env.reserve(int64(total)); err != nil {
				return err
			}
		}
		var links []store.NewLink
		if lp := env.Tenant.Links; lp != nil {
			if msg, links, err = lp.Gate(msg, now); err != nil {
				return mimeError(err)
			}
		}
		inert(links)
		content, err := seal(msg)
		if err != nil {
			return err
		}
		nr := store.NewCopy(sm.Address, state, now)
		nr.Content, nr.Links, nr.Seed, nr.SeedProvider = len(out.Contents), links, sm.Name, sm.Provider
		out.Contents = append(out.Contents, content)
		out.Rcpts = append(out.Rcpts, nr)
	}
	return nil
}

// PlacementTest sends eml to every seed mailbox as tenant's mail, on
// behalf of actor (an API caller), and returns its message id once it is
// durable. Its envelope sender is its From address, as the issuer's own
// mail would have. A refusal is an error RefusalOf reads.
func (r *Relay) PlacementTest(ctx context.Context, t *Tenant, eml []byte, actor string) (string, error) {
	env := &Envelope{Tenant: t, AuthUser: actor, PlacementTest: true, ClientIP: netip.IPv6Loopback()}
	if h, _, err := parseSubmission(eml); err == nil {
		if list, err := addressParser.ParseList(h.Get("From")); err == nil && len(list) == 1 {
			env.From = list[0].Address
		}
	}
	return r.Accept(ctx, env, eml)
}

// RefusalOf reads a refusal of the gateway's: its SMTP code, its reason
// code and the text a person reads; ok false for any other error.
func RefusalOf(err error) (code int, reason, text string, ok bool) {
	var r *reply
	if !errors.As(err, &r) {
		return 0, "", "", false
	}
	return r.code, r.reason, r.String(), true
}

// inert keeps a seed copy's links pending whatever the tenant's links.enable
// says: anyone who reads a seed mailbox must not reach the download.
func inert(links []store.NewLink) {
	for i := range links {
		links[i].State = store.LinkPending
	}
}
