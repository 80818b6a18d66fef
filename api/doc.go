// Package api is certgate's JSON API for the helpdesk and the issuer's
// systems: bearer tokens and their scopes, JSON errors, the OpenAPI
// description, and the routes. Its handlers translate HTTP and call the
// domain packages (the store for reads, quarantine's Desk for changes);
// the rules themselves live there, not here.
package api
