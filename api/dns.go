package api

import (
	"context"
	"net/http"

	"github.com/certgate/certgate/dnscheck"
)

// DNSReports gives the DNS self-check's last report, running it when
// there is none yet (dnscheck.Monitor).
type DNSReports interface {
	Report(ctx context.Context) (*dnscheck.Report, error)
}

// dns: GET /api/v1/dns, the DNS self-check's last report, with the rows
// of the caller's tenants and the shared ones (sending addresses, HELO
// name).
func (a *API) dns(w http.ResponseWriter, r *http.Request) {
	if a.dnsReports == nil {
		writeError(w, http.StatusNotFound, "not_configured", "the DNS self-check has no resolver (dns_check.resolver, /etc/resolv.conf)")
		return
	}
	rep, err := a.dnsReports.Report(r.Context())
	if err != nil {
		a.internal(w, "running the DNS check", err)
		return
	}
	writeJSON(w, http.StatusOK, rep.ForTenants(tenants(r).Has))
}
