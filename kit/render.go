package kit

import (
	"encoding/json"
	"errors"
	htmltemplate "html/template"
	"io"
	"log/slog"
	"net/http"
	"strings"
	texttemplate "text/template"
)

// Formats are the kit's output formats.
var Formats = []string{"md", "html", "json"}

// Write renders k in format (one of Formats).
func (k *Kit) Write(w io.Writer, format string) error {
	switch format {
	case "md":
		return markdownTemplate.Execute(w, k)
	case "html":
		return pageTemplate.Execute(w, k)
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(k)
	}
	return errors.New("unknown format " + format + ": md, html or json")
}

// fence is a Markdown code fence longer than any run of backticks in
// the text it encloses.
func fence(text string) string {
	f := "```"
	for strings.Contains(text, f) {
		f += "`"
	}
	return f
}

var markdownTemplate = texttemplate.Must(texttemplate.New("md").Funcs(texttemplate.FuncMap{"fence": fence, "inc": func(i int) int { return i + 1 }}).Parse(
	`# {{.Title}}

{{.Intro}}

**{{.Principle}}**

## {{.Labels.Identity}}
{{range .Facts}}
- {{.Label}}: {{range $i, $v := .Values}}{{if $i}}, {{end}}` + "`{{$v}}`" + `{{end}}{{end}}
{{if or .Identity.SupportEmail .Identity.SupportURL}}
{{.Labels.Support}}{{with .Identity.SupportEmail}} {{.}}{{end}}{{with .Identity.SupportURL}} {{.}}{{end}}
{{end}}{{range .Sections}}
## {{.Title}}

{{.Why}}

### {{$.Labels.Steps}}
{{range $i, $s := .Steps}}
{{$i | inc}}. {{$s}}{{end}}
{{range .Code}}
{{.Label}}:

{{fence .Text}}
{{.Text}}
{{fence .Text}}
{{end}}{{if .Limits}}
### {{$.Labels.Limits}}
{{range .Limits}}
- {{.}}{{end}}
{{end}}
{{$.Labels.Sources}}:{{range .Sources}}
- <{{.}}>{{end}}
{{end}}`))

// pageTemplate is the kit as one self-contained page: no scripts, no
// external assets, inline styles only, readable on a phone.
var pageTemplate = htmltemplate.Must(htmltemplate.New("kit").Parse(`<!doctype html>
<html lang="{{.Lang}}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{{.Title}}</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;background:#f4f5f7;color:#1d2330;margin:0;padding:1.5rem .75rem;line-height:1.5}
main{max-width:52rem;margin:0 auto;background:#fff;border-radius:8px;padding:1.5rem;box-shadow:0 1px 3px rgba(0,0,0,.12);overflow-wrap:anywhere}
h1{font-size:1.45rem;margin:0 0 1rem}
h2{font-size:1.2rem;margin:2rem 0 .5rem;padding-top:1rem;border-top:1px solid #dde1e7}
h3{font-size:1rem;margin:1rem 0 .25rem}
.principle{background:#eef4fb;border-left:4px solid #0b5cad;padding:.6rem .8rem;font-weight:600}
dl{margin:0}
dt{font-weight:600;margin-top:.6rem}
dd{margin:0}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.88rem}
dd code{background:#f0f2f5;border-radius:4px;padding:0 .25rem;display:inline-block;margin:.1rem 0}
pre{background:#1d2330;color:#f4f5f7;border-radius:6px;padding:.75rem;white-space:pre-wrap;overflow-wrap:anywhere;margin:.3rem 0 .8rem}
figure{margin:0}
figcaption{font-size:.9rem;color:#3a4150;margin-top:.6rem}
.why{color:#3a4150}
.limits li{margin:.2rem 0}
.sources{font-size:.9rem}
a{color:#0b5cad}
nav ul{padding-left:1.2rem}
</style>
</head>
<body>
<main>
<h1>{{.Title}}</h1>
<p>{{.Intro}}</p>
<p class="principle">{{.Principle}}</p>
<section aria-labelledby="identity">
<h2 id="identity">{{.Labels.Identity}}</h2>
<dl>
{{range .Facts}}<dt>{{.Label}}</dt><dd>{{range .Values}}<code>{{.}}</code> {{end}}</dd>
{{end}}</dl>
{{if or .Identity.SupportEmail .Identity.SupportURL}}<p>{{.Labels.Support}}{{with .Identity.SupportEmail}} {{.}}{{end}}{{with .Identity.SupportURL}} {{.}}{{end}}</p>{{end}}
</section>
<nav aria-label="{{.Labels.Contents}}"><h2>{{.Labels.Contents}}</h2><ul>
{{range .Sections}}<li><a href="#{{.ID}}">{{.Title}}</a></li>
{{end}}</ul></nav>
{{range .Sections}}<section aria-labelledby="{{.ID}}">
<h2 id="{{.ID}}">{{.Title}}</h2>
<p class="why">{{.Why}}</p>
<h3>{{$.Labels.Steps}}</h3>
<ol>{{range .Steps}}<li>{{.}}</li>{{end}}</ol>
{{range .Code}}<figure><figcaption>{{.Label}}</figcaption><pre><code>{{.Text}}</code></pre></figure>
{{end}}{{if .Limits}}<h3>{{$.Labels.Limits}}</h3>
<ul class="limits">{{range .Limits}}<li>{{.}}</li>{{end}}</ul>
{{end}}<p class="sources">{{$.Labels.Sources}}:{{range .Sources}}<br><a href="{{.}}" rel="noreferrer">{{.}}</a>{{end}}</p>
</section>
{{end}}</main>
</body>
</html>
`))

// Source finds a tenant's kit in a language; ErrUnknownTenant when there
// is no such tenant.
type Source func(tenant, lang string) (*Kit, error)

// PageHandler serves GET /kit/{tenant}: the kit as a public page in the
// language of ?lang= or Accept-Language. It shows only what receivers
// see anyway, so it needs no credential; an unknown tenant is a 404.
func PageHandler(src Source, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l := Negotiate(r.URL.Query().Get("lang"), r.Header.Get("Accept-Language"))
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Vary", "Accept-Language")
		tenant := r.PathValue("tenant")
		var k *Kit
		err := ErrUnknownTenant
		if len(tenant) <= MaxTenantName {
			k, err = src(tenant, l)
		}
		if err != nil {
			h.Set("Content-Type", "text/plain; charset=utf-8")
			if errors.Is(err, ErrUnknownTenant) {
				w.WriteHeader(http.StatusNotFound)
				io.WriteString(w, "404 page not found\n")
				return
			}
			log.Error("kit: building page", "tenant", tenant, "err", err)
			http.Error(w, "the kit is not available right now", http.StatusInternalServerError)
			return
		}
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Language", k.Lang)
		h.Set("Cache-Control", "no-cache")
		if r.Method == http.MethodHead {
			return
		}
		if err := k.Write(w, "html"); err != nil {
			log.Error("kit: rendering page", "tenant", tenant, "err", err)
		}
	})
}
