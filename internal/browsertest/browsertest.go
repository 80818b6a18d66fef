// Package browsertest drives Debian's headless Chromium (with chromedp) for
// tests of certgate's web pages: the gate, the allowlisting kit, the
// helpdesk console. It starts one browser per test, opens tabs that record
// every request they make, switches between a desktop window and a phone,
// reads the accessibility tree and takes screenshots. What a page must
// show is the test's own business.
package browsertest

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

const (
	// ChromiumPath is where Debian's chromium package puts the browser.
	ChromiumPath = "/usr/bin/chromium"
	// DesktopUA is what the browser says it is: the gate turns away
	// "HeadlessChrome", as it should.
	DesktopUA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
	// ShotsEnv names a folder that also receives the screenshots, for a
	// person to look at (they are always written under t.TempDir).
	ShotsEnv = "CERTGATE_BROWSER_SHOTS"
)

// Require returns Chromium's path. Without it the test skips, saying why,
// unless CERTGATE_E2E=1 requires it; like the end-to-end suite, it is
// left out of -short unless CERTGATE_E2E=1.
func Require(t *testing.T) string {
	t.Helper()
	required := os.Getenv("CERTGATE_E2E") == "1"
	if testing.Short() && !required {
		t.Skip("skipping the browser test in -short mode (CERTGATE_E2E=1 runs it)")
	}
	if fi, err := os.Stat(ChromiumPath); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return ChromiumPath
	}
	msg := ChromiumPath + " is not installed (apt-get install chromium fonts-dejavu-core)"
	if required {
		t.Fatalf("%s\n(CERTGATE_E2E=1 requires the browser test; scripts/check.sh installs what it needs)", msg)
	}
	t.Skipf("skipping: %s (with CERTGATE_E2E=1 this is a failure)", msg)
	return ""
}

// lockedBuffer collects Chromium's output, written from another goroutine.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start starts one headless Chromium for the test and returns its
// context; each subtest opens a tab of its own. The whole browser lives at
// most limit, so nothing here can hang the test run.
func Start(t *testing.T, limit time.Duration) context.Context {
	t.Helper()
	path := Require(t)
	output := &lockedBuffer{}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // root in a container has no usable sandbox
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		// The machine's network is closed: no background connections
		// that would wait for it.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.UserAgent(DesktopUA),
		chromedp.WindowSize(1280, 800),
		chromedp.CombinedOutput(output),
	)
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	browser, cancelBrowser := chromedp.NewContext(allocCtx)
	// Cleanups run last in, first out: the browser is gone (cancelAlloc
	// waits for it) before t.TempDir removes its profile.
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		cancel()
	})
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("starting %s: %v\n%s", path, err, output.String())
	}
	return browser
}

// Within bounds one browser step.
func Within(t *testing.T, ctx context.Context, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	t.Cleanup(cancel)
	return ctx
}

// Tab is one tab, which asks for pages in one language and records every
// request it makes.
type Tab struct {
	Ctx      context.Context
	mu       sync.Mutex
	requests []string // "METHOD URL", redirects included
}

// OpenTab opens a tab in browser that sends acceptLanguage with every
// request ("" sends the browser's own).
func OpenTab(t *testing.T, browser context.Context, acceptLanguage string) *Tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser)
	t.Cleanup(cancel)
	tab := &Tab{Ctx: ctx}
	err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok && e.Request != nil {
			tab.mu.Lock()
			tab.requests = append(tab.requests, e.Request.Method+" "+e.Request.URL)
			tab.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	if acceptLanguage != "" {
		_, err = chromedp.Call(Within(t, ctx, 10*time.Second), network.SetExtraHTTPHeaders,
			network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Accept-Language": acceptLanguage}})
		if err != nil {
			t.Fatalf("setting Accept-Language: %v", err)
		}
	}
	return tab
}

// Requests are the requests the tab has made so far, "METHOD URL".
func (tab *Tab) Requests() []string {
	tab.mu.Lock()
	defer tab.mu.Unlock()
	return slices.Clone(tab.requests)
}

// Navigate opens url and returns the response of the page it ends on.
func (tab *Tab) Navigate(t *testing.T, url string) *network.Response {
	t.Helper()
	resp, err := chromedp.Run(Within(t, tab.Ctx, 15*time.Second), chromedp.NavigateResponse(url))
	if err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
	return resp
}

// Phone makes the tab a 360x740 touch screen, until Desktop.
func (tab *Tab) Phone(t *testing.T) {
	t.Helper()
	err := chromedp.Do(Within(t, tab.Ctx, 10*time.Second), chromedp.EmulateViewport(360, 740, chromedp.EmulateMobile, chromedp.EmulateTouch))
	if err != nil {
		t.Fatalf("phone viewport: %v", err)
	}
}

// Desktop makes the tab a 1280x800 window again after Phone: clearing
// the emulation alone leaves the next page laid out at the phone's width.
func (tab *Tab) Desktop(t *testing.T) {
	t.Helper()
	if err := chromedp.Do(Within(t, tab.Ctx, 10*time.Second), chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatalf("desktop viewport: %v", err)
	}
}

// Evaluate runs a JavaScript expression in the page and decodes its value.
func Evaluate[T any](t *testing.T, tab *Tab, js string) T {
	t.Helper()
	v, err := chromedp.Run(Within(t, tab.Ctx, 10*time.Second), chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluating in the page: %v", err)
	}
	return v
}

// Accessible reads the accessibility tree screen readers get: the names
// of the nodes not ignored, by role (heading, button, link, listitem, ...).
func (tab *Tab) Accessible(t *testing.T) map[string][]string {
	t.Helper()
	res, err := chromedp.Call(Within(t, tab.Ctx, 10*time.Second), accessibility.GetFullAXTree, accessibility.GetFullAXTreeParams{})
	if err != nil {
		t.Fatalf("reading the accessibility tree: %v", err)
	}
	str := func(v *accessibility.Value) string {
		var s string
		if v != nil {
			json.Unmarshal(v.Value, &s)
		}
		return s
	}
	named := map[string][]string{}
	for _, n := range res.Nodes {
		if !n.Ignored {
			role := str(n.Role)
			named[role] = append(named[role], str(n.Name))
		}
	}
	return named
}

// Screenshot captures the viewport, saves it as name.png (under
// t.TempDir, and under $CERTGATE_BROWSER_SHOTS when set) and returns it,
// after checking that it is a PNG of the viewport's size, w by h.
func (tab *Tab) Screenshot(t *testing.T, name string, w, h int) image.Image {
	t.Helper()
	shot, err := chromedp.Run(Within(t, tab.Ctx, 10*time.Second), chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	file := filepath.Join(t.TempDir(), name+".png")
	if err := os.WriteFile(file, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	if dir := os.Getenv(ShotsEnv); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, name+".png"), shot, 0o644); err != nil {
			t.Errorf("copying the screenshot to %s=%s: %v", ShotsEnv, dir, err)
		}
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", name, err)
	}
	size := img.Bounds().Size()
	if size.X != w || size.Y != h || size.X < 300 || size.Y < 400 || size.X > 4000 || size.Y > 4000 {
		t.Fatalf("screenshot %s is %v, want the %dx%d viewport", name, size, w, h)
	}
	t.Logf("screenshot %s: %dx%d, %d bytes, %s", name, size.X, size.Y, len(shot), file)
	return img
}

// Near reports whether img's pixel at p is within 6 of the colour want in
// each channel.
func Near(img image.Image, p image.Point, want [3]uint8) bool {
	r, g, b, _ := img.At(p.X, p.Y).RGBA()
	got := [3]int{int(r >> 8), int(g >> 8), int(b >> 8)}
	for i := range got {
		if d := got[i] - int(want[i]); d < -6 || d > 6 {
			return false
		}
	}
	return true
}
