package compose

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	htmltemplate "html/template"
	"io/fs"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	texttemplate "text/template"

	"github.com/certgate/certgate/internal/lang"
)

// defaultFS holds the default templates: NAME.LANG.txt (which also
// defines "subject") and NAME.LANG.html for each template and language,
// _common.LANG.txt and _common.LANG.html with the pieces they share, and
// _layout.html, the HTML document around every language's content.
//
//go:embed templates/*
var defaultFS embed.FS

// Languages are the languages of the default templates, the first the
// default: certgate's issuers are Spanish-speaking first.
var Languages = []string{"es", "pt-BR", "fr", "en"}

// Bounds on a tenant's template directory, read at start and on reload.
const (
	maxTemplateFiles = 400
	maxTemplateBytes = 256 << 10
)

// Templates holds the default templates (certificate, voucher, token;
// html/template + text/template pairs in es, pt-BR, fr, en, embedded in
// the binary) plus tenants' own.
type Templates struct {
	defaults *set
	tenants  map[string]*set
}

// set is one directory's templates: name -> language -> pair.
type set struct {
	pairs map[string]map[string]*pair
}

type pair struct {
	text *texttemplate.Template // the body; defines "subject"
	html *htmltemplate.Template
}

// fileName is NAME.LANG.(txt|html); a leading "_" marks shared pieces.
var fileName = regexp.MustCompile(`^(_?[A-Za-z0-9_-]{1,64})\.([A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})?)\.(txt|html)$`)

// NewTemplates loads the defaults and, for each tenant, the directory of
// that tenant's extra and overriding templates: files NAME.LANG.html and
// NAME.LANG.txt (the .txt also defines "subject"); _NAME.LANG.txt and
// _NAME.LANG.html hold pieces every template of that language may use
// (the defaults' _common pieces are there too); an .html file may use
// {{template "layout" .}} with its own {{define "content"}}. Every
// problem is an error naming the file; an empty map loads the defaults
// only.
func NewTemplates(dirs map[string]string) (*Templates, error) {
	sub, _ := fs.Sub(defaultFS, "templates")
	defaults, err := loadSet(sub, nil)
	if err != nil {
		return nil, fmt.Errorf("compose: default templates: %w", err)
	}
	t := &Templates{defaults: defaults, tenants: map[string]*set{}}
	for tenant, dir := range dirs {
		s, err := loadSet(os.DirFS(dir), sub)
		if err != nil {
			return nil, fmt.Errorf("compose: templates of tenant %s in %s: %w", tenant, dir, err)
		}
		t.tenants[tenant] = s
	}
	return t, nil
}

// loadSet parses the templates of fsys; base, when given, is the defaults'
// directory, whose layout and shared pieces come first so that the
// tenant's may use or replace them.
func loadSet(fsys fs.FS, base fs.FS) (*set, error) {
	type src struct{ name, lang, ext, text string }
	var files []src
	read := func(fsys fs.FS, strict bool) error {
		entries, err := fs.ReadDir(fsys, ".")
		if err != nil {
			return err
		}
		if len(entries) > maxTemplateFiles {
			return fmt.Errorf("more than %d files", maxTemplateFiles)
		}
		for _, e := range entries {
			if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			var m []string
			if e.Name() == "_layout.html" {
				m = []string{e.Name(), "_layout", "", "html"}
			} else if m = fileName.FindStringSubmatch(e.Name()); m == nil {
				if strict {
					return fmt.Errorf("%s: not a template's name (NAME.LANG.txt or NAME.LANG.html, as certificate.es.txt)", e.Name())
				}
				continue
			}
			info, err := e.Info()
			if err != nil {
				return err
			}
			if info.Size() > maxTemplateBytes {
				return fmt.Errorf("%s: larger than %d bytes", e.Name(), maxTemplateBytes)
			}
			b, err := fs.ReadFile(fsys, e.Name())
			if err != nil {
				return err
			}
			files = append(files, src{m[1], m[2], m[3], strings.ReplaceAll(string(b), "\r\n", "\n")})
		}
		return nil
	}
	if base != nil {
		if err := read(base, true); err != nil {
			return nil, err
		}
		// Only the shared pieces of the defaults: their templates are
		// looked up in the defaults' set.
		files = slices.DeleteFunc(files, func(f src) bool { return !strings.HasPrefix(f.name, "_") })
	}
	if err := read(fsys, true); err != nil {
		return nil, err
	}
	funcs := map[string]any{"lines": lines, "dict": dict}
	// Shared pieces first, a tenant's after the defaults' so that its
	// own replace them.
	textBase := map[string]*texttemplate.Template{}
	htmlBase := map[string]*htmltemplate.Template{}
	newText := func(l string) *texttemplate.Template {
		if textBase[l] == nil {
			textBase[l] = texttemplate.New("").Funcs(funcs).Option("missingkey=error")
		}
		return textBase[l]
	}
	newHTML := func(l string) *htmltemplate.Template {
		if htmlBase[l] == nil {
			htmlBase[l] = htmltemplate.New("").Funcs(funcs).Option("missingkey=error")
		}
		return htmlBase[l]
	}
	var layouts []string
	for _, f := range files {
		if f.name == "_layout" {
			layouts = append(layouts, f.text)
		}
	}
	langs := map[string]bool{}
	for _, f := range files {
		if f.lang != "" {
			langs[f.lang] = true
		}
	}
	for l := range langs {
		h := newHTML(l)
		for _, layout := range layouts {
			if _, err := h.New("_layout.html").Parse(layout); err != nil {
				return nil, fmt.Errorf("_layout.html: %v", err)
			}
		}
	}
	for _, f := range files {
		if !strings.HasPrefix(f.name, "_") || f.lang == "" {
			continue
		}
		file := f.name + "." + f.lang + "." + f.ext
		var err error
		if f.ext == "txt" {
			_, err = newText(f.lang).New(file).Parse(f.text)
		} else {
			_, err = newHTML(f.lang).New(file).Parse(f.text)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %v", file, err)
		}
	}
	s := &set{pairs: map[string]map[string]*pair{}}
	for _, f := range files {
		if strings.HasPrefix(f.name, "_") {
			continue
		}
		file := f.name + "." + f.lang + "." + f.ext
		if s.pairs[f.name] == nil {
			s.pairs[f.name] = map[string]*pair{}
		}
		p := s.pairs[f.name][f.lang]
		if p == nil {
			p = &pair{}
			s.pairs[f.name][f.lang] = p
		}
		if f.ext == "txt" {
			t, err := texttemplate.Must(newText(f.lang).Clone()).New(file).Parse(f.text)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", file, err)
			}
			if t.Lookup("subject") == nil {
				return nil, fmt.Errorf(`%s: defines no "subject" ({{define "subject"}}...{{end}})`, file)
			}
			p.text = t
		} else {
			t, err := htmltemplate.Must(newHTML(f.lang).Clone()).New(file).Parse(f.text)
			if err != nil {
				return nil, fmt.Errorf("%s: %v", file, err)
			}
			p.html = t
		}
	}
	for name, byLang := range s.pairs {
		for l, p := range byLang {
			if p.text == nil {
				return nil, fmt.Errorf("%s.%s.html has no %s.%s.txt beside it", name, l, name, l)
			}
			if p.html == nil {
				return nil, fmt.Errorf("%s.%s.txt has no %s.%s.html beside it", name, l, name, l)
			}
		}
	}
	return s, nil
}

// lines splits a person's text at its line breaks, for HTML that shows
// them as <br> without ever taking the text for markup.
func lines(s string) []string {
	return strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
}

// dict makes a map of key, value pairs for a {{template}} that needs more
// than one value ({{template "button" (dict "URL" .URL "Label" "...")}}).
func dict(kv ...string) (map[string]string, error) {
	if len(kv)%2 != 0 {
		return nil, errors.New("dict: an odd number of arguments")
	}
	m := make(map[string]string, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m, nil
}

// find returns the pair for a tenant's template in the language asked for
// (matched as internal/lang does: "pt" finds pt-BR), the tenant's own
// before the defaults; with no language asked, fallback, then the first
// of Languages the template has. The language it returns is the one used.
func (t *Templates) find(tenant, name, asked, fallback string) (*pair, string, error) {
	byLang := map[string]*pair{}
	if d := t.defaults.pairs[name]; d != nil {
		for l, p := range d {
			byLang[l] = p
		}
	}
	if s := t.tenants[tenant]; s != nil {
		for l, p := range s.pairs[name] {
			byLang[l] = p
		}
	}
	if len(byLang) == 0 {
		return nil, "", fieldErr("template", fmt.Sprintf("%s is not a template of this sender (it has %s)", quoteShort(name), strings.Join(t.names(tenant), ", ")))
	}
	have := make([]string, 0, len(byLang))
	for l := range byLang {
		have = append(have, l)
	}
	sort.Slice(have, func(i, j int) bool {
		return langOrder(have[i]) < langOrder(have[j]) || langOrder(have[i]) == langOrder(have[j]) && have[i] < have[j]
	})
	if asked != "" {
		l := lang.Match(asked, have)
		if l == "" {
			return nil, "", fieldErr("language", fmt.Sprintf("template %s has no %s version (it has %s)", name, quoteShort(asked), strings.Join(have, ", ")))
		}
		return byLang[l], l, nil
	}
	if l := lang.Match(fallback, have); fallback != "" && l != "" {
		return byLang[l], l, nil
	}
	return byLang[have[0]], have[0], nil
}

// langOrder sorts Languages first, in their order.
func langOrder(l string) int {
	if i := slices.Index(Languages, l); i >= 0 {
		return i
	}
	return len(Languages)
}

// names lists the templates a tenant has, for an error.
func (t *Templates) names(tenant string) []string {
	var out []string
	for n := range t.defaults.pairs {
		out = append(out, n)
	}
	if s := t.tenants[tenant]; s != nil {
		for n := range s.pairs {
			if t.defaults.pairs[n] == nil {
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out
}

// view is what a template sees. Everything in it is text: html/template
// escapes it for its context, text/template leaves it as it is.
type view struct {
	Lang         string            // the language used
	Issuer       string            // Options.DisplayName
	SupportEmail string            // Options.SupportEmail
	SupportURL   string            // Options.SupportURL
	Format       string            // the collect format, "" for mail without a certificate
	Message      string            // the request's custom_message
	URL          string            // the request's download_url
	PEM          string            // the certificates, with plaintext
	Filename     string            // the attachment's file name, with attachment
	V            map[string]string // the request's variables and the certificate's fields
}

var missingKey = regexp.MustCompile(`map has no entry for key "([^"]*)"`)

// render runs a pair: subject and text from the text template, the HTML
// from the html one. A variable the template needs and the request lacks
// is a *FieldError naming it.
func (p *pair) render(v *view) (subject, text, html string, err error) {
	var sb, tb, hb bytes.Buffer
	if err = p.text.ExecuteTemplate(&sb, "subject", v); err == nil {
		if err = p.text.Execute(&tb, v); err == nil {
			err = p.html.Execute(&hb, v)
		}
	}
	if err != nil {
		if m := missingKey.FindStringSubmatch(err.Error()); m != nil {
			return "", "", "", fieldErr("variables."+m[1], "is required by this template")
		}
		return "", "", "", fmt.Errorf("compose: template: %w", err)
	}
	subject = strings.Join(strings.Fields(sb.String()), " ")
	if subject == "" {
		return "", "", "", errors.New("compose: template: the subject is empty")
	}
	return subject, tidyText(tb.String()), hb.String(), nil
}

// tidyText leaves a template's text as a person would write it: no
// trailing spaces, at most one empty line in a row, none at either end.
// Lines that templates leave empty around an {{if}} would otherwise show.
func tidyText(s string) string {
	var b strings.Builder
	empty := 0
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		l = strings.TrimRight(l, " \t\r")
		if l == "" {
			empty++
			continue
		}
		if empty > 0 && b.Len() > 0 {
			b.WriteString("\n")
		}
		empty = 0
		b.WriteString(l)
		b.WriteString("\n")
	}
	return b.String()
}
