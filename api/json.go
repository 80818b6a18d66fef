package api

import (
	"encoding/json"
	"net/http"
)

// writeJSON writes v as the JSON body of a response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// writeError writes an API error: a machine-readable code and a reason a
// person can act on.
func writeError(w http.ResponseWriter, status int, code, reason string) {
	writeJSON(w, status, map[string]string{"error": code, "reason": reason})
}

// writeFieldError is writeError naming the offending field of the
// request ("emails[2]", "certificate.pem"); "" for the request as a whole.
func writeFieldError(w http.ResponseWriter, status int, code, reason, field string) {
	v := map[string]string{"error": code, "reason": reason}
	if field != "" {
		v["field"] = field
	}
	writeJSON(w, status, v)
}
