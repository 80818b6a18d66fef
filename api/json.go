package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
)

// writeJSON writes v as the JSON body of a response.
func writeJSON(w http.ResponseWriter, status int, v any) {
	jsonHeader(w)
	w.WriteHeader(status)
	newEncoder(w).Encode(v)
}

// jsonBytes is v as writeJSON writes it, for writeJSONBytes.
func jsonBytes(v any) []byte {
	var b bytes.Buffer
	newEncoder(&b).Encode(v)
	return b.Bytes()
}

// writeJSONBytes writes body, made by jsonBytes, as writeJSON would.
func writeJSONBytes(w http.ResponseWriter, status int, body []byte) {
	jsonHeader(w)
	w.WriteHeader(status)
	w.Write(body)
}

func jsonHeader(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
}

func newEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc
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
