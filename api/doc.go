// Package api is certgate's JSON API for the helpdesk and the issuer's
// systems: bearer tokens with their scopes and tenants, JSON errors, the
// OpenAPI description, and the routes. Its handlers translate HTTP and
// call quarantine, for reads and changes alike, with the caller's
// tenants; the rules themselves (another tenant's mail is not found)
// live there, not here.
package api
