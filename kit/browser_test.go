package kit

// The kit's public page in Debian's headless Chromium, in each language:
// it renders under its CSP with inline styles only, loads nothing but
// itself, fits a 360px phone without sideways scrolling (long commands
// wrap), and gives assistive technology a language, a heading and the
// sections' headings.

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/certgate/certgate/internal/browsertest"
)

type kitLayout struct {
	Lang      string   `json:"lang"`
	Title     string   `json:"title"`
	H1        string   `json:"h1"`
	ViewportW float64  `json:"viewportW"`
	ScrollW   float64  `json:"scrollW"`
	Wide      []string `json:"wide"`
	Pre       int      `json:"pre"`
	Resources []string `json:"resources"`
	Styled    bool     `json:"styled"`
}

// kitLayoutJS measures the page: what reaches past the viewport, how many
// code blocks it has, whether the inline styles applied.
const kitLayoutJS = `(() => {
	const vw = window.innerWidth;
	const wide = Array.from(document.querySelectorAll('main *'))
		.filter(el => el.getBoundingClientRect().right > vw + 0.5)
		.map(el => el.tagName.toLowerCase() + ': ' + el.textContent.slice(0, 50));
	return {
		lang: document.documentElement.lang,
		title: document.title,
		h1: document.querySelector('h1') ? document.querySelector('h1').textContent : '',
		viewportW: vw,
		scrollW: document.documentElement.scrollWidth,
		wide: wide,
		pre: document.querySelectorAll('pre').length,
		resources: performance.getEntriesByType('resource').map(e => e.name),
		styled: getComputedStyle(document.body).backgroundColor === 'rgb(244, 245, 247)',
	};
})()`

func TestKitPageInChromium(t *testing.T) {
	browser := browsertest.Start(t, 60*time.Second)
	mux := http.NewServeMux()
	mux.Handle("GET /kit/{tenant}", PageHandler(NewDirectory(testConfig()).Kit, slog.New(slog.NewTextHandler(io.Discard, nil))))
	srv := httptest.NewServer(mux)
	defer srv.Close()
	pageURL := srv.URL + "/kit/ca"

	for _, tc := range []struct{ acceptLanguage, lang, title, section string }{
		{"es-AR,es;q=0.9", "es", "Kit de lista de permitidos: Autoridad Certificante O'Example", "Las personas que reciben el correo"},
		{"pt-BR,pt;q=0.9", "pt-BR", "Kit de lista de permissões: Autoridad Certificante O'Example", "As pessoas que recebem o e-mail"},
		{"fr-FR,fr;q=0.9", "fr", "Kit de liste d’autorisation : Autoridad Certificante O'Example", "Les personnes qui reçoivent le courrier"},
		{"en-US,en;q=0.9", "en", "Allowlisting kit: Autoridad Certificante O'Example", "People receiving the mail"},
	} {
		t.Run(tc.lang, func(t *testing.T) {
			tab := browsertest.OpenTab(t, browser, tc.acceptLanguage)
			resp := tab.Navigate(t, pageURL)
			if resp.Status != http.StatusOK || resp.MimeType != "text/html" {
				t.Fatalf("kit page: %d %s", resp.Status, resp.MimeType)
			}
			check := func(where string) kitLayout {
				l := browsertest.Evaluate[kitLayout](t, tab, kitLayoutJS)
				if l.Lang != tc.lang || l.Title != tc.title || l.H1 != tc.title {
					t.Errorf("%s: lang %q, title %q, h1 %q; want %q and %q", where, l.Lang, l.Title, l.H1, tc.lang, tc.title)
				}
				if !l.Styled {
					t.Errorf("%s: the inline styles did not apply", where)
				}
				if l.ScrollW > l.ViewportW || len(l.Wide) != 0 {
					t.Errorf("%s: %gpx wide in a %gpx viewport; past the edge: %q", where, l.ScrollW, l.ViewportW, l.Wide)
				}
				if l.Pre < 4 {
					t.Errorf("%s: %d code blocks, want the commands and rules", where, l.Pre)
				}
				if len(l.Resources) != 0 {
					t.Errorf("%s: the page loaded %q", where, l.Resources)
				}
				return l
			}
			l := check("desktop")
			tab.Screenshot(t, "kit-"+tc.lang+"-desktop", int(l.ViewportW), int(browsertest.Evaluate[float64](t, tab, "window.innerHeight")))

			named := tab.Accessible(t)
			for _, h := range []string{tc.title, "Microsoft 365 / Exchange Online", "Google Workspace (Gmail)", tc.section} {
				if !slices.Contains(named["heading"], h) {
					t.Errorf("accessibility tree: headings %q lack %q", named["heading"], h)
				}
			}

			tab.Phone(t)
			l = check("phone")
			if l.ViewportW != 360 {
				t.Errorf("phone viewport is %gpx wide, want 360", l.ViewportW)
			}
			tab.Screenshot(t, "kit-"+tc.lang+"-phone", 360, int(browsertest.Evaluate[float64](t, tab, "window.innerHeight")))
			tab.Desktop(t)

			if tr := tab.Requests(); !slices.Equal(tr, []string{"GET " + pageURL}) {
				t.Errorf("the tab requested %q, want only the page", tr)
			}
		})
	}
}
