package api

import "net/http"

// KitSource builds a tenant's allowlisting kit (package kit) as a value
// to encode as JSON, in the language of lang (?lang=) or acceptLanguage;
// false for a tenant the configuration does not have.
type KitSource func(tenant, lang, acceptLanguage string) (kit any, found bool)

// kit: GET /api/v1/kit?tenant=&lang=
func (a *API) kit(w http.ResponseWriter, r *http.Request) {
	if a.kitSource == nil {
		writeError(w, http.StatusNotFound, "not_configured", "the allowlisting kit is not served here")
		return
	}
	l := r.URL.Query().Get("lang")
	if len(l) > 16 {
		writeError(w, http.StatusBadRequest, "bad_request", "lang must be a language tag such as es, pt-BR, fr or en")
		return
	}
	// Another tenant's kit is as absent as a tenant that does not exist.
	tenant, ok := oneTenant(w, r)
	if !ok {
		return
	}
	k, found := a.kitSource(tenant, l, r.Header.Get("Accept-Language"))
	if !found {
		writeError(w, http.StatusNotFound, "not_found", "no tenant "+tenant+" for this token")
		return
	}
	writeJSON(w, http.StatusOK, k)
}
