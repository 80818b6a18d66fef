package demo

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// kitLanguages are the languages the allowlisting kit is written in.
var kitLanguages = []string{"es", "pt-BR", "fr", "en"}

// printKits fetches each demo tenant's allowlisting kit from certgate's
// public page, in every language, as a customer's mail admin would open
// it, saves the pages under dir/kit and says where they are.
func printKits(ctx context.Context, out printer, httpBase, dir string, tenants map[string][]string) error {
	out("\nallowlisting kits, for the mail admins of the issuer's customers (built from the live configuration):")
	if err := os.MkdirAll(filepath.Join(dir, "kit"), 0o755); err != nil {
		return err
	}
	for _, tenant := range []string{"issuer", "portal"} {
		var sizes []string
		for _, lang := range kitLanguages {
			page, err := fetchKit(ctx, httpBase+"/kit/"+tenant+"?lang="+lang)
			if err != nil {
				return fmt.Errorf("the %s kit of tenant %s: %w", lang, tenant, err)
			}
			// The kit must name what receivers see: the language asked
			// for, and every From domain of the tenant.
			if !strings.Contains(page, `lang="`+lang+`"`) {
				return fmt.Errorf("the %s kit of tenant %s is not in %s", lang, tenant, lang)
			}
			for _, d := range tenants[tenant] {
				if !strings.Contains(page, d) {
					return fmt.Errorf("the %s kit of tenant %s does not name its domain %s", lang, tenant, d)
				}
			}
			file := filepath.Join(dir, "kit", tenant+"-"+lang+".html")
			if err := os.WriteFile(file, []byte(page), 0o644); err != nil {
				return err
			}
			sizes = append(sizes, fmt.Sprintf("%s %.1f KB", lang, float64(len(page))/1024))
		}
		out("  %-7s %s/kit/%s  (%s)", tenant, httpBase, tenant, strings.Join(sizes, ", "))
	}
	out("  saved as %s while the demo runs (--keep keeps them); also: certgate kit --tenant issuer --lang es --format md", filepath.Join(dir, "kit", "*.html"))
	return nil
}

// fetchKit reads one kit page, bounded in time and size.
func fetchKit(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(body), nil
}
