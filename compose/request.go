package compose

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	neturl "net/url"
	"reflect"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/certgate/certgate/config"
)

// The collect formats: how the recipient gets the certificate.
const (
	FormatAttachment   = "attachment"   // as a file attached to the mail
	FormatPlaintext    = "plaintext"    // as PEM in the body
	FormatDownloadLink = "downloadlink" // as a link to the issuer's download page
)

// Bounds on what one request may carry, beyond the body's own cap.
const (
	maxCustomMessage = 4000 // characters: a few paragraphs, not a newsletter
	maxVariables     = 50
	maxVariableName  = 64
	maxVariableValue = 1000
	maxURLLen        = 2048
	maxJSONDepth     = 3 // the request, certificate or variables, a string
)

// Request is the JSON body of POST /api/v1/send (and /preview).
type Request struct {
	From                     string            `json:"from"`
	Emails                   Addresses         `json:"emails"`                     // a JSON array of strings OR one comma/semicolon-separated string
	CertificateCollectFormat string            `json:"certificate_collect_format"` // attachment | plaintext | downloadlink
	Certificate              *Certificate      `json:"certificate,omitempty"`      // {"pem": ...} or {"der": base64} or {"pkcs7": base64} (or {"pkcs12": base64}: only with downloadlink)
	DownloadURL              string            `json:"download_url,omitempty"`
	CustomMessage            string            `json:"custom_message,omitempty"`
	Template                 string            `json:"template,omitempty"` // certificate (default) | voucher | token | a tenant's own
	Language                 string            `json:"language,omitempty"` // es | pt-BR | fr | en
	Variables                map[string]string `json:"variables,omitempty"`
	Class                    string            `json:"class,omitempty"` // bulk | transactional; "" = the tenant's default
	Hold                     bool              `json:"hold,omitempty"`

	// cert is Certificate as parsed, kept between Check and Compose
	// while Certificate stays the same.
	cert     *parsedCert
	certFrom Certificate
}

// parsed returns the request's certificate, parsed once.
func (r *Request) parsed() (*parsedCert, error) {
	if r.Certificate == nil {
		return nil, nil
	}
	if r.cert != nil && r.certFrom == *r.Certificate {
		return r.cert, nil
	}
	p, err := parseCertificate(r.Certificate)
	if err != nil {
		return nil, err
	}
	r.cert, r.certFrom = p, *r.Certificate
	return p, nil
}

// Addresses is the request's "emails": a JSON array of strings, or one
// string as people paste it ("a@x, b@y; c@z"). Decode leaves it parsed:
// bare addresses, IDN domains in A-labels, no duplicates.
type Addresses []string

// UnmarshalJSON takes either form; a string is split as ParseAddresses
// does, an array's items are taken one address each.
func (a *Addresses) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = Addresses{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return fieldErr("emails", "must be an array of addresses or one string of addresses separated by commas")
	}
	if l == nil {
		l = []string{}
	}
	*a = l
	return nil
}

// FieldError is a refusal of one field of the request: Field is its JSON
// path ("emails[2]", "certificate.pem"), Reason a sentence a person reads.
type FieldError struct{ Field, Reason string }

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

func fieldErr(field, reason string) *FieldError { return &FieldError{Field: field, Reason: reason} }

// ErrTooLarge is wrapped by Decode's error for a body over its cap (the
// API's 413).
var ErrTooLarge = errors.New("compose: request body too large")

// Decode reads and checks a request body (at most max bytes; unknown
// fields refused; strict JSON), returning *FieldError for a bad request,
// an error wrapping ErrTooLarge for a body over max, and the reader's own
// error (an *http.MaxBytesError, say) when reading fails. The request it
// returns has Emails parsed (see ParseAddresses) and passed Check.
func Decode(r io.Reader, max int64) (*Request, error) {
	body, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("compose: reading the request: %w", err)
	}
	if int64(len(body)) > max {
		return nil, fmt.Errorf("%w: over %d bytes", ErrTooLarge, max)
	}
	if err := strictJSON(body); err != nil {
		return nil, err
	}
	var req Request
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, jsonFieldError(err)
	}
	if err := req.Check(); err != nil {
		return nil, err
	}
	return &req, nil
}

// strictJSON refuses what encoding/json would quietly accept and another
// reader of the same body might read differently: invalid UTF-8 (turned
// into U+FFFD), a key given twice (the last one wins), a key in another
// case ("From" for "from"), anything after the object, and nesting deeper
// than the request has.
func strictJSON(body []byte) error {
	if !utf8.Valid(body) {
		return fieldErr("", "the body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return fieldErr("", "the body is not JSON: "+err.Error())
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return fieldErr("", "the body must be one JSON object")
	}
	if err := walkObject(dec, "", 1); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fieldErr("", "the body holds more than one JSON value")
	}
	return nil
}

var (
	requestKeys     = jsonKeys(Request{})
	certificateKeys = jsonKeys(Certificate{})
)

// walkObject reads the members of an object whose '{' is read, checking
// keys at path (the request's and the certificate's against their fields).
// Its work is bounded by the body's length, its recursion by maxJSONDepth.
func walkObject(dec *json.Decoder, path string, depth int) error {
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fieldErr(path, "is not valid JSON: "+err.Error())
		}
		key, _ := tok.(string)
		at := key
		if path != "" {
			at = path + "." + key
		}
		if seen[key] {
			return fieldErr(at, "is given twice")
		}
		seen[key] = true
		var known map[string]bool
		switch path {
		case "":
			known = requestKeys
		case "certificate":
			known = certificateKeys
		}
		if known != nil && !known[key] {
			return fieldErr(at, "is not a field of the request")
		}
		if err := walkValue(dec, at, depth); err != nil {
			return err
		}
	}
	_, err := dec.Token() // '}'
	if err != nil {
		return fieldErr(path, "is not valid JSON: "+err.Error())
	}
	return nil
}

func walkValue(dec *json.Decoder, path string, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return fieldErr(path, "is not valid JSON: "+err.Error())
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	if depth >= maxJSONDepth {
		return fieldErr(path, "is nested deeper than the request allows")
	}
	if d == '{' {
		return walkObject(dec, path, depth+1)
	}
	for i := 0; dec.More(); i++ {
		if err := walkValue(dec, fmt.Sprintf("%s[%d]", path, i), depth+1); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // ']'
		return fieldErr(path, "is not valid JSON: "+err.Error())
	}
	return nil
}

// jsonKeys lists the JSON names of a struct's exported fields.
func jsonKeys(v any) map[string]bool {
	m := map[string]bool{}
	t := reflect.TypeOf(v)
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); f.IsExported() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			m[name] = true
		}
	}
	return m
}

// jsonFieldError turns encoding/json's errors into a FieldError naming the
// field where it can.
func jsonFieldError(err error) error {
	var fe *FieldError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &fe):
		return fe
	case errors.As(err, &te):
		return fieldErr(te.Field, "must be a JSON "+jsonTypeName(te.Type.Kind().String()))
	}
	return fieldErr("", "the body is not a valid request: "+strings.TrimPrefix(err.Error(), "json: "))
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean (true or false)"
	case "map", "struct", "ptr":
		return "object"
	case "slice":
		return "array"
	}
	return kind
}

// Check validates a request as a whole, before any tenant is known: what
// Decode calls, and Compose again for a request built in Go. It leaves
// Emails parsed (bare, A-labels, no duplicates) and normalizes the format,
// class and language; every refusal is a *FieldError.
func (r *Request) Check() error {
	if r.From == "" {
		return fieldErr("from", "is required: the address the mail comes from")
	}
	from, err := parseAddress(r.From)
	if err != nil {
		return fieldErr("from", err.Error())
	}
	r.From = from
	if err := r.checkEmails(); err != nil {
		return err
	}
	format := strings.ToLower(strings.TrimSpace(r.CertificateCollectFormat))
	switch format {
	case FormatAttachment, FormatPlaintext, FormatDownloadLink:
		r.CertificateCollectFormat = format
	case "":
		// Only mail that carries no certificate (a voucher, a token) may
		// leave it out.
		if r.Template == "" || r.Template == "certificate" {
			return fieldErr("certificate_collect_format", "is required: attachment, plaintext or downloadlink")
		}
		r.CertificateCollectFormat = ""
	default:
		return fieldErr("certificate_collect_format", fmt.Sprintf("%s is not attachment, plaintext or downloadlink", quoteShort(r.CertificateCollectFormat)))
	}
	if r.Certificate == nil && (format == FormatAttachment || format == FormatPlaintext) {
		return fieldErr("certificate", "is required with "+format)
	}
	if r.Certificate != nil {
		if format == "" {
			return fieldErr("certificate_collect_format", "is required to send a certificate: attachment, plaintext or downloadlink")
		}
		p, err := r.parsed()
		if err != nil {
			return err
		}
		if p.kind == "pkcs12" && format != FormatDownloadLink {
			return fieldErr("certificate.pkcs12", "a PKCS#12 file holds a private key, which is never mailed: give the certificate alone (pem, der or pkcs7), or send a download link (certificate_collect_format downloadlink)")
		}
	}
	if r.DownloadURL != "" {
		if err := checkURL(r.DownloadURL); err != nil {
			return fieldErr("download_url", err.Error())
		}
	} else if format == FormatDownloadLink {
		return fieldErr("download_url", "is required with downloadlink")
	}
	if n := utf8.RuneCountInString(r.CustomMessage); n > maxCustomMessage {
		return fieldErr("custom_message", fmt.Sprintf("is %d characters, more than %d", n, maxCustomMessage))
	}
	if err := checkText(r.CustomMessage, true); err != nil {
		return fieldErr("custom_message", err.Error())
	}
	if r.Template != "" && !validName(r.Template) {
		return fieldErr("template", "must be a template name (letters, digits, - and _)")
	}
	if r.Class != "" {
		c, ok := config.ParseClass(r.Class)
		if !ok {
			return fieldErr("class", fmt.Sprintf("%s is not bulk or transactional", quoteShort(r.Class)))
		}
		r.Class = string(c)
	}
	if len(r.Variables) > maxVariables {
		return fieldErr("variables", fmt.Sprintf("holds %d variables, more than %d", len(r.Variables), maxVariables))
	}
	for k, v := range r.Variables {
		if !validVariable(k) {
			return fieldErr("variables", fmt.Sprintf("%s is not a variable name (lower-case letters, digits and _)", quoteShort(k)))
		}
		if utf8.RuneCountInString(v) > maxVariableValue {
			return fieldErr("variables."+k, fmt.Sprintf("is longer than %d characters", maxVariableValue))
		}
		if err := checkText(v, false); err != nil {
			return fieldErr("variables."+k, err.Error())
		}
	}
	return nil
}

// checkEmails parses every address of r.Emails, an array's items one each
// or a single pasted string, naming the bad ones.
func (r *Request) checkEmails() error {
	switch {
	case len(r.Emails) == 0:
		return fieldErr("emails", "is required: the addresses to send to")
	case len(r.Emails) > MaxAddresses:
		return fieldErr("emails", fmt.Sprintf("holds more than %d addresses", MaxAddresses))
	case len(r.Emails) == 1 && strings.ContainsAny(r.Emails[0], ",;\n"):
		l, err := ParseAddresses(r.Emails[0])
		if err != nil {
			return err
		}
		r.Emails = l
		return nil
	}
	var l addrList
	first := -1
	for i, item := range r.Emails {
		n := l.nbad
		l.add(item, fmt.Sprintf("emails[%d] %s", i, quoteShort(item)))
		if l.nbad > n && first < 0 {
			first = i
		}
	}
	field := "emails"
	if first >= 0 {
		field = fmt.Sprintf("emails[%d]", first)
	}
	out, err := l.result(field)
	if err != nil {
		return err
	}
	r.Emails = out
	return nil
}

// checkURL accepts an absolute http or https URL written as it goes on
// the wire: ASCII without spaces, quotes or angle brackets, so that mail
// clients and the gate's rewriter see the whole of it, and not ending in
// punctuation they would leave out of it.
func checkURL(s string) error {
	if len(s) > maxURLLen {
		return fmt.Errorf("is longer than %d characters", maxURLLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("\"<>\\^`{|}", c) >= 0 {
			return fmt.Errorf("holds %q: write the URL percent-encoded (RFC 3986 2.1)", rune(c))
		}
	}
	u, err := neturl.Parse(s)
	if err != nil {
		return fmt.Errorf("is not a URL")
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("must be an absolute https URL")
	}
	if u.User != nil {
		return fmt.Errorf("must not hold a user name (https://user@host/ misleads people about where it goes)")
	}
	if strings.ContainsAny(s[len(s)-1:], ".,;:!?") {
		return fmt.Errorf("must not end in punctuation, which mail clients leave out of the link")
	}
	return nil
}

// underPrefix reports whether u falls under one of the tenant's gate
// prefixes as the gate's rewriter matches them: the prefix without regard
// to case in scheme and host (RFC 3986 6.2.2.1), and the same origin, so
// that "https://issuer.example@evil.example/" does not pass.
func underPrefix(u string, prefixes []string) bool {
	cand, err := neturl.Parse(u)
	if err != nil || cand.User != nil {
		return false
	}
	for _, p := range prefixes {
		pre, err := neturl.Parse(p)
		if err == nil && strings.EqualFold(pre.Scheme, cand.Scheme) && strings.EqualFold(pre.Host, cand.Host) &&
			len(u) >= len(p) && strings.EqualFold(u[:len(p)], p) {
			return true
		}
	}
	return false
}

// checkText refuses control characters (and, unless multiline, line
// breaks): a variable goes into the Subject, and nothing a request gives
// should reach the message as anything but text.
func checkText(s string, multiline bool) error {
	for _, c := range s {
		if multiline && (c == '\n' || c == '\r' || c == '\t') {
			continue
		}
		if unicode.IsControl(c) || c == '\u2028' || c == '\u2029' || c == utf8.RuneError {
			return fmt.Errorf("holds a control character (%U)", c)
		}
	}
	return nil
}

// validName is a template's name: it becomes a file name.
func validName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validVariable is a variable's name: what a template writes after "V.".
func validVariable(s string) bool {
	if s == "" || len(s) > maxVariableName || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
