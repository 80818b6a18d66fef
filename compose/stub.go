// Package compose is a stand-in for the real package of issue 13 (branch
// compose), with its API only, so that the send API builds; the lead
// deletes this file at merge.
package compose

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

type Request struct {
	From                     string            `json:"from"`
	Emails                   Addresses         `json:"emails"`
	CertificateCollectFormat string            `json:"certificate_collect_format"`
	Certificate              *Certificate      `json:"certificate,omitempty"`
	DownloadURL              string            `json:"download_url,omitempty"`
	CustomMessage            string            `json:"custom_message,omitempty"`
	Template                 string            `json:"template,omitempty"`
	Language                 string            `json:"language,omitempty"`
	Variables                map[string]string `json:"variables,omitempty"`
	Class                    string            `json:"class,omitempty"`
	Hold                     bool              `json:"hold,omitempty"`
}

type Addresses []string

func (a *Addresses) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		list, err := ParseAddresses(s)
		*a = list
		return err
	}
	var l []string
	err := json.Unmarshal(b, &l)
	*a = l
	return err
}

type Certificate struct {
	PEM   string `json:"pem,omitempty"`
	DER   string `json:"der,omitempty"`
	PKCS7 string `json:"pkcs7,omitempty"`
}

type FieldError struct{ Field, Reason string }

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func Decode(r io.Reader, max int64) (*Request, error) {
	dec := json.NewDecoder(io.LimitReader(r, max))
	dec.DisallowUnknownFields()
	var req Request
	if err := dec.Decode(&req); err != nil {
		return nil, &FieldError{Field: "", Reason: err.Error()}
	}
	if req.From == "" {
		return nil, &FieldError{Field: "from", Reason: "required"}
	}
	if len(req.Emails) == 0 {
		return nil, &FieldError{Field: "emails", Reason: "required"}
	}
	switch req.CertificateCollectFormat {
	case "attachment", "plaintext", "downloadlink":
	default:
		return nil, &FieldError{Field: "certificate_collect_format", Reason: "must be attachment, plaintext or downloadlink"}
	}
	return &req, nil
}

func ParseAddresses(s string) ([]string, error) {
	var out []string
	for _, a := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' }) {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out, nil
}

type Templates struct{ dirs map[string]string }

func NewTemplates(dirs map[string]string) (*Templates, error) { return &Templates{dirs: dirs}, nil }

type Message struct {
	Data                   []byte
	Recipients             []string
	Subject, Format, Class string
}

type Options struct {
	Tenant, DisplayName, SupportEmail, SupportURL string
	Now                                           time.Time
	MessageID                                     string
	GatePrefixes                                  []string
}

func (t *Templates) Compose(req *Request, opts Options) (*Message, error) {
	for i, a := range req.Emails {
		if !strings.Contains(a, "@") {
			return nil, &FieldError{Field: fmt.Sprintf("emails[%d]", i), Reason: "not an address"}
		}
	}
	body := "Your certificate.\r\n" + req.CustomMessage + "\r\n" + req.DownloadURL + "\r\n"
	data := "From: " + req.From + "\r\nTo: " + strings.Join(req.Emails, ", ") + "\r\nSubject: Certificate\r\n" +
		"Date: " + opts.Now.Format(time.RFC1123Z) + "\r\nMessage-ID: <" + opts.MessageID + ">\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body
	return &Message{Data: []byte(data), Recipients: req.Emails, Subject: "Certificate", Format: req.CertificateCollectFormat, Class: req.Class}, nil
}
