package demo

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

const testGateURL = "http://127.0.0.1:8080/d/AbCdEfGhIjKlMnOpQrStUv"

// gatedCopy is the portal's mail as certgate delivers it: each link
// rewritten to the gate, the HTML part quoted-printable.
func gatedCopy(rcpt string) string {
	return "From: no-reply@" + portalDomain + "\r\nTo: " + rcpt + "\r\nSubject: x\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nVotre certificat : " + testGateURL + "\r\n" +
		"--b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"<p><a href=3D\"" + testGateURL[:30] + "=\r\n" + testGateURL[30:] + "\">T=C3=A9l=C3=A9charger</a></p>\r\n" +
		"--b1--\r\n"
}

func TestGateURLIn(t *testing.T) {
	if got := gateURLIn([]byte(gatedCopy("a@gmail.com"))); got != testGateURL {
		t.Errorf("gate URL %q; want %q", got, testGateURL)
	}
	if got := gateURLIn([]byte(portalMail("http://127.0.0.1:9/download/", "a@gmail.com"))); got != "" {
		t.Errorf("found gate URL %q in a mail certgate did not rewrite", got)
	}
}

// The wait ends when the recipient's copy arrives, whatever else the
// provider stores before it.
func TestWaitForGateURL(t *testing.T) {
	sims := startTestProviders(t)
	google := named(sims, "google")
	const rcpt = "cliente.portal@gmail.com"
	got := make(chan string, 1)
	go func() {
		u, err := waitForGateURL(context.Background(), google, rcpt)
		if err != nil {
			u = err.Error()
		}
		got <- u
	}()
	deliverTo(t, sims, "someone.else@gmail.com")
	deliver(t, google, rcpt, gatedCopy(rcpt))
	select {
	case u := <-got:
		if u != testGateURL {
			t.Errorf("waited for %q; want %q", u, testGateURL)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still waiting after the copy arrived")
	}
	// Once it is there, asking again answers at once.
	if u, err := waitForGateURL(context.Background(), google, rcpt); u != testGateURL || err != nil {
		t.Errorf("second wait: %q, %v", u, err)
	}
}

func TestWaitForGateURLGivesUpWithContext(t *testing.T) {
	sims := startTestProviders(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := waitForGateURL(ctx, named(sims, "google"), "nobody@gmail.com"); err == nil {
		t.Error("waiting on an ended context found a link")
	}
}

func TestDownloadServerHandsOutTheCertificate(t *testing.T) {
	ds, err := startDownloadServer()
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	cert, err := download(ds.prefix + "7731/9f2c4e?formato=pem")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(cert), "-----BEGIN CERTIFICATE-----\n") {
		t.Errorf("downloaded %q", cert)
	}
}

// The recipient's browser shows the gate's answer as it is: a page, or
// the redirect the button leads to.
func TestBrowser(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /d/x", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept-Language") == "" {
			t.Error("the browser sends no language")
		}
		fmt.Fprint(w, `<h1>Votre téléchargement est prêt</h1><form method="post"><input type="hidden" name="n" value="N1"><button>Télécharger</button></form>`)
	})
	mux.HandleFunc("POST /d/x", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if string(body) != "n=N1" {
			http.Error(w, "bad nonce", http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, "http://127.0.0.1:9/download/", http.StatusSeeOther)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	b := newBrowser(srv.URL + "/d/x")
	_, html := b.open("GET", nil)
	if got := heading(html); got != "Votre téléchargement est prêt" {
		t.Errorf("heading %q", got)
	}
	if m := noncePattern.FindStringSubmatch(html); m == nil || m[1] != "N1" {
		t.Errorf("nonce %v", m)
	}
	resp, _ := b.open("POST", url.Values{"n": {"N1"}})
	if resp == nil || resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "http://127.0.0.1:9/download/" {
		t.Errorf("pressing the button: %+v", resp)
	}
	if got := heading("<p>no heading</p>"); got != "?" {
		t.Errorf("heading of a page without one: %q", got)
	}
}
