package quarantine

import (
	"context"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/store"
)

// EnableOnDelivery wraps the store that delivery records attempts in: a
// delivered copy of a tenant whose links.enable is on_delivery gets its
// pending links turned on in the same transaction as the delivery record
// (store.Attempt.EnableLinks), so that it can never be left delivered with
// links that wait for nothing. Delivery itself knows nothing of links.
func EnableOnDelivery(st store.Store, tenants []config.Tenant) store.Store {
	on := map[string]bool{}
	for _, t := range tenants {
		if len(t.Links.Gate) > 0 && t.Links.Enable == config.LinksOnDelivery {
			on[t.Name] = true
		}
	}
	if len(on) == 0 {
		return st
	}
	return linksOnDelivery{Store: st, tenants: on}
}

type linksOnDelivery struct {
	store.Store
	tenants map[string]bool
}

func (s linksOnDelivery) RecordAttempt(ctx context.Context, a store.Attempt) error {
	if a.State == store.StateDelivered && s.tenants[a.Tenant] {
		a.EnableLinks = true
	}
	return s.Store.RecordAttempt(ctx, a)
}
