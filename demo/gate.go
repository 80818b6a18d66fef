package demo

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/certgate/certgate/mimeedit"
	"github.com/certgate/certgate/sim"
)

// downloadServer plays the issuer's download page: it hands out a
// certificate to whoever reaches it, which is why the link is gated.
type downloadServer struct {
	prefix string // http://127.0.0.1:PORT/download/
	srv    *http.Server
	cert   []byte
}

func startDownloadServer() (*downloadServer, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c, err := sim.SelfSigned("cliente.portal.example")
	if err != nil {
		return nil, err
	}
	ds := &downloadServer{prefix: "http://" + l.Addr().String() + "/download/", cert: c.CertPEM}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /download/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-pem-file")
		w.Write(ds.cert)
	})
	ds.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go ds.srv.Serve(l)
	return ds, nil
}

func (ds *downloadServer) Close() { ds.srv.Close() }

// portalMail is a certificate notice from the portal tenant, whose
// download links wait for the helpdesk's release.
func portalMail(prefix, rcpt string) string {
	link := prefix + "7731/9f2c4e?formato=pem"
	return "From: Service Certificats <no-reply@" + portalDomain + ">\r\nTo: " + rcpt + "\r\n" +
		"Subject: Votre certificat est disponible\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
		"Bonjour,\r\n\r\nVotre certificat est prêt : " + link + "\r\n\r\n" +
		"--b1\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
		"<p>Bonjour,</p><p><a href=\"" + strings.ReplaceAll(link, "&", "&amp;") + "\">Télécharger le certificat</a></p>\r\n" +
		"--b1--\r\n"
}

var gateURLPattern = regexp.MustCompile(`http://[0-9.:]+/d/[A-Za-z0-9_-]{22}`)
var headingPattern = regexp.MustCompile(`<h1>([^<]*)</h1>`)
var noncePattern = regexp.MustCompile(`name="n" value="([^"]+)"`)

// gatedLink plays the portal, the recipient and the helpdesk: a mail
// whose link waits for release, the pending page, the release through the
// API, and the certificate fetched through the gate.
func gatedLink(ctx context.Context, out printer, smtpAddr, password, httpBase, token string, google *sim.Provider, ds *downloadServer) error {
	const rcpt = "cliente.portal@gmail.com"
	out("\ngated download link (tenant portal: links.enable on_release)")
	if err := sendPortalMail(smtpAddr, password, portalMail(ds.prefix, rcpt), rcpt); err != nil {
		return err
	}
	gateURL, err := waitForGateURL(ctx, google, rcpt)
	if err != nil {
		return err
	}
	out("  delivered to %s; its link now reads %s", rcpt, gateURL)

	b := newBrowser(gateURL)
	_, html := b.open("GET", nil)
	out("  recipient opens it (French browser):   %q", heading(html))

	id, err := findMessage(httpBase, token, rcpt)
	if err != nil {
		return err
	}
	status, err := release(httpBase, token, id)
	if err != nil {
		return err
	}
	out("  helpdesk: POST /api/v1/messages/%s/release -> %s", id, status)

	_, html = b.open("GET", nil)
	out("  recipient opens it again:               %q", heading(html))
	nonce := noncePattern.FindStringSubmatch(html)
	if nonce == nil {
		return fmt.Errorf("the released link's page has no button")
	}
	time.Sleep(700 * time.Millisecond) // a person reads, then presses: the gate refuses presses before min_human_delay (500ms)
	resp, _ := b.open("POST", url.Values{"n": {nonce[1]}})
	if resp == nil || resp.StatusCode != http.StatusSeeOther {
		return fmt.Errorf("pressing the button did not forward to the download")
	}
	loc := resp.Header.Get("Location")
	cert, err := download(loc)
	if err != nil {
		return err
	}
	out("  presses the button: 303 to %s", loc)
	out("  and gets the certificate: %s (%d bytes)", strings.SplitN(string(cert), "\n", 2)[0], len(cert))
	return nil
}

// sendPortalMail submits msg as the portal tenant.
func sendPortalMail(smtpAddr, password, msg, rcpt string) error {
	c, err := smtp.DialStartTLS(smtpAddr, &tls.Config{InsecureSkipVerify: true}) // the demo's own throwaway certificate
	if err != nil {
		return err
	}
	if err := c.Auth(sasl.NewPlainClient("", "portal", password)); err != nil {
		return err
	}
	if err := c.SendMail("no-reply@"+portalDomain, []string{rcpt}, strings.NewReader(msg)); err != nil {
		return err
	}
	c.Quit()
	return nil
}

// waitForGateURL waits, 30 seconds at most, until rcpt's copy is at the
// provider, and reads the gate's link out of it.
func waitForGateURL(ctx context.Context, p *sim.Provider, rcpt string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		n := p.Stats().Received // read before looking, so a copy stored meanwhile ends the wait
		var gateURL string
		for _, m := range p.MessagesTo(rcpt) {
			if u := gateURLIn(m.Data); u != "" {
				gateURL = u
			}
		}
		if gateURL != "" {
			return gateURL, nil
		}
		if p.WaitFor(ctx, n+1) != nil {
			return "", fmt.Errorf("the portal's mail did not arrive with a gated link")
		}
	}
}

// gateURLIn finds a link to the gate in the decoded parts of msg; the
// last one, which is the HTML part's.
func gateURLIn(msg []byte) string {
	var gateURL string
	mimeedit.Walk(msg, func(_ *mimeedit.Part, d []byte) error {
		if u := gateURLPattern.Find(d); u != nil {
			gateURL = string(u)
		}
		return nil
	})
	return gateURL
}

// browser is the recipient's: French, and it does not follow the gate's
// redirect, so that the demo can show it.
type browser struct {
	url    string
	client *http.Client
}

func newBrowser(pageURL string) *browser {
	return &browser{url: pageURL, client: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// open fetches the page (GET) or presses its button (POST with form); on
// failure the body is the error's text.
func (b *browser) open(method string, form url.Values) (*http.Response, string) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, b.url, body)
	req.Header.Set("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36")
	req.Header.Set("Accept-Language", "fr-FR,fr;q=0.9")
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, err.Error()
	}
	html, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(html)
}

// heading is what a gate page says, or "?".
func heading(html string) string {
	if m := headingPattern.FindStringSubmatch(html); m != nil {
		return m[1]
	}
	return "?"
}

// release releases message id through the API, as the helpdesk would
// after confirming the customer, and returns the API's status.
func release(httpBase, token, id string) (string, error) {
	req, _ := http.NewRequest("POST", httpBase+"/api/v1/messages/"+id+"/release", strings.NewReader(`{"reason": "customer confirmed by phone"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return resp.Status, nil
}

// download fetches the certificate from the issuer's download page.
func download(loc string) ([]byte, error) {
	resp, err := http.Get(loc)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	cert, _ := io.ReadAll(resp.Body)
	return cert, nil
}

func findMessage(base, token, rcpt string) (string, error) {
	req, _ := http.NewRequest("GET", base+"/api/v1/messages?recipient="+url.QueryEscape(rcpt), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var page struct {
		Messages []struct {
			ID string `json:"id"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&page); err != nil || len(page.Messages) == 0 {
		return "", fmt.Errorf("the API found no message to %s (%v)", rcpt, err)
	}
	return page.Messages[0].ID, nil
}
