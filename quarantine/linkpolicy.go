package quarantine

import (
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
)

// LinkPolicy is how one tenant's download links are gated: which URLs,
// when they turn on, for how long and how many times.
type LinkPolicy struct {
	rewriter *Rewriter
	enable   config.LinkEnable
	ttl      time.Duration
	maxUses  int
}

// NewLinkPolicy is the tenant's links configuration, gating under
// publicURL; nil when the tenant gates no links.
func NewLinkPolicy(l config.Links, publicURL string) *LinkPolicy {
	if len(l.Gate) == 0 {
		return nil
	}
	return &LinkPolicy{rewriter: NewRewriter(l.Gate, publicURL), enable: l.Enable, ttl: l.TTL.D(), maxUses: l.MaxUses}
}

// Gate rewrites one copy's gated URLs (see Rewriter.Rewrite) and returns
// the links to store with it: only their tokens' hashes, enabled at once or
// pending until delivery or release as the tenant says. A message with no
// gated URL comes back unchanged, with no links.
func (p *LinkPolicy) Gate(msg []byte, now time.Time) ([]byte, []store.NewLink, error) {
	out, links, err := p.rewriter.Rewrite(msg)
	if err != nil || len(links) == 0 {
		return out, nil, err
	}
	state := store.LinkPending // on_delivery and on_release
	if p.enable == config.LinksImmediately {
		state = store.LinkEnabled
	}
	nls := make([]store.NewLink, 0, len(links))
	for _, l := range links {
		nl := store.NewLink{TokenHash: HashToken(l.Token), URL: l.URL, State: state, MaxUses: p.maxUses}
		if p.ttl > 0 {
			nl.ExpiresAt = now.Add(p.ttl)
		}
		nls = append(nls, nl)
	}
	return out, nls, nil
}
