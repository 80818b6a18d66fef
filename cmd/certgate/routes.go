package main

import (
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/delivery"
)

// deliveryRoutes turns the validated delivery.routes into the router's
// routes, reading the files they name (CA bundles, smarthost passwords):
// delivery takes values, never files.
func deliveryRoutes(cfg config.Delivery) ([]delivery.Route, error) {
	var out []delivery.Route
	for i, rc := range cfg.Routes {
		rt := delivery.Route{Domains: rc.Domains, MX: rc.MX, TLS: rc.TLS}
		if rc.Host != "" {
			h, p, err := net.SplitHostPort(rc.Host)
			if err != nil {
				return nil, fmt.Errorf("delivery.routes[%d].host: %w", i, err)
			}
			if rt.Port, err = strconv.Atoi(p); err != nil {
				return nil, fmt.Errorf("delivery.routes[%d].host: bad port", i)
			}
			rt.Host = h
		}
		if rc.CAFile != "" {
			pem, err := os.ReadFile(rc.CAFile)
			if err != nil {
				return nil, fmt.Errorf("delivery.routes[%d].ca_file: %w", i, err)
			}
			rt.RootCAs = x509.NewCertPool()
			if !rt.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("delivery.routes[%d].ca_file: no certificates in %s", i, rc.CAFile)
			}
		}
		if rc.Auth != nil {
			pass, err := rc.Auth.Password()
			if err != nil {
				return nil, fmt.Errorf("delivery.routes[%d].auth: %w", i, err)
			}
			rt.User, rt.Pass = rc.Auth.Username, pass
		}
		out = append(out, rt)
	}
	return out, nil
}
