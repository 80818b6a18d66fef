// Package lang picks the language of a page a person reads (the gate,
// the allowlisting kit, the helpdesk console) from what the browser asks
// for.
package lang

import (
	"strconv"
	"strings"
)

// maxParts bounds the work on a hostile Accept-Language header.
const maxParts = 32

// Pick returns the supported tag the browser prefers in acceptLanguage
// (RFC 9110 12.5.4, with q-values; earlier wins among equals), or
// fallback when it asks for none of them. Tags match case-insensitively,
// whole ("pt-BR") or by their primary language ("pt" and "pt-PT" pick
// "pt-BR" when it is the one Portuguese supported).
func Pick(acceptLanguage string, supported []string, fallback string) string {
	best, bestQ := fallback, -1.0
	for i, part := range strings.SplitN(acceptLanguage, ",", maxParts+1) {
		if i == maxParts {
			break
		}
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			var err error
			if q, err = strconv.ParseFloat(v, 64); err != nil {
				continue
			}
		}
		q -= float64(i) * 1e-6
		if s := Match(tag, supported); s != "" && q > bestQ && q > 0 {
			best, bestQ = s, q
		}
	}
	return best
}

// Match returns the supported tag that tag names (whole, then by its
// primary language), or "" for none: for ?lang= in a URL.
func Match(tag string, supported []string) string {
	tag = strings.TrimSpace(tag)
	for _, s := range supported {
		if strings.EqualFold(tag, s) {
			return s
		}
	}
	primary, _, _ := strings.Cut(tag, "-")
	for _, s := range supported {
		sp, _, _ := strings.Cut(s, "-")
		if primary != "" && strings.EqualFold(primary, sp) {
			return s
		}
	}
	return ""
}
