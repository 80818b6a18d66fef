package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/placement"
	"github.com/certgate/certgate/store"
)

// cmdSeeds runs "certgate seeds test|check".
func cmdSeeds(args []string, stdout io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprint(stdout, commandUsage("seeds"))
		if len(args) == 0 {
			return usageError{errors.New("seeds needs test or check")}
		}
		return nil
	}
	switch args[0] {
	case "test":
		return cmdSeedsTest(args[1:], stdout)
	case "check":
		return cmdSeedsCheck(args[1:], stdout)
	}
	return usageError{fmt.Errorf("unknown seeds command %q: test or check", args[0])}
}

// errPlacement is the exit status 1 of a test whose copies did not all
// reach the inbox.
var errPlacement = errors.New("not every copy reached the inbox")

// placementResult is what the API says of one seed copy.
type placementResult struct {
	Seed     string   `json:"seed"`
	Provider string   `json:"provider"`
	Folder   string   `json:"folder"`
	Delay    *float64 `json:"delay_seconds"`
	Verdicts struct {
		DKIM  string `json:"dkim"`
		DMARC string `json:"dmarc"`
		SCL   *int   `json:"scl"`
	} `json:"verdicts"`
}

// cmdSeedsTest sends a message to every seed mailbox through the running
// daemon and prints where each copy lands as the results come in.
func cmdSeedsTest(args []string, stdout io.Writer) error {
	fs := newFlags("seeds test", stdout)
	path := fs.String("config", "/etc/certgate/certgate.yaml", "configuration file (for http.listen)")
	base := fs.String("url", "", "certgate's HTTP address (default: http.listen of --config)")
	tokenFile := fs.String("token-file", "", "file holding an API token with the admin scope (or set CERTGATE_TOKEN)")
	eml := fs.String("eml", "", "the message to test, as a .eml file")
	tenant := fs.String("tenant", "", "the tenant to send as (needed when the token has several)")
	wait := fs.Duration("wait", 15*time.Minute, "how long to wait for every copy (the daemon's seeds.deadline decides missing)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *eml == "" {
		return usageError{errors.New("give the message with --eml FILE")}
	}
	msg, err := os.ReadFile(*eml)
	if err != nil {
		return err
	}
	if *base == "" {
		if *base = apiURLFromConfig(*path); *base == "" {
			*base = "http://127.0.0.1:8080"
		}
	}
	client, err := newAPIClient(*base, *tokenFile)
	if err != nil {
		return err
	}
	q := ""
	if *tenant != "" {
		q = "?tenant=" + url.QueryEscape(*tenant)
	}
	var started struct{ ID string }
	if err := client.do("POST", "/api/v1/placement/tests"+q, "message/rfc822", bytes.NewReader(msg), http.StatusAccepted, &started); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "test %s sent to the seed mailboxes\n", started.ID)
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SEED\tPROVIDER\tFOLDER\tDELAY\tDKIM\tDMARC\tSCL")
	tw.Flush()
	printed := map[string]string{} // seed -> folder printed: a later move prints again
	deadline := time.Now().Add(*wait)
	failures := 0
	for {
		var res struct {
			State   string            `json:"state"`
			Results []placementResult `json:"results"`
		}
		if err := client.do("GET", "/api/v1/placement/tests/"+url.PathEscape(started.ID), "", nil, http.StatusOK, &res); err != nil {
			// A restart of the daemon or a blip of the network is no
			// reason to lose a test that runs for minutes.
			if failures++; failures > 5 || time.Now().After(deadline) {
				return err
			}
			time.Sleep(2 * time.Second)
			continue
		}
		failures = 0
		for _, r := range res.Results {
			if r.Folder != store.FolderPending && printed[r.Seed] != r.Folder {
				printed[r.Seed] = r.Folder
				fmt.Fprintln(tw, resultRow(r))
			}
		}
		tw.Flush()
		if res.State == "done" || time.Now().After(deadline) {
			return placementVerdict(res.Results, stdout)
		}
		time.Sleep(2 * time.Second) // a person watching: every 2 s is plenty
	}
}

func resultRow(r placementResult) string {
	delay, scl := "-", "-"
	if r.Delay != nil {
		delay = (time.Duration(*r.Delay * float64(time.Second))).Round(100 * time.Millisecond).String()
	}
	if r.Verdicts.SCL != nil && *r.Verdicts.SCL >= 0 {
		scl = fmt.Sprint(*r.Verdicts.SCL)
	}
	return strings.Join([]string{r.Seed, r.Provider, r.Folder, delay, orDash(r.Verdicts.DKIM), orDash(r.Verdicts.DMARC), scl}, "\t")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// placementVerdict sums up a test: fine when every copy reached the inbox
// (a Gmail tab is the inbox too), errPlacement otherwise.
func placementVerdict(results []placementResult, stdout io.Writer) error {
	count := map[string]int{}
	bad := 0
	for _, r := range results {
		class, _, _ := strings.Cut(r.Folder, ":")
		count[class]++
		if class != store.FolderInbox && class != "tab" {
			bad++
		}
	}
	fmt.Fprintf(stdout, "%d copies: %d inbox, %d tab, %d junk, %d other, %d missing, %d still pending\n", len(results),
		count["inbox"], count["tab"], count["junk"], count["other"], count["missing"], count["pending"])
	if bad > 0 {
		return errPlacement
	}
	return nil
}

// cmdSeedsCheck logs in to every seed mailbox of the configuration and
// reports what the watcher will find there.
func cmdSeedsCheck(args []string, stdout io.Writer) error {
	fs := newFlags("seeds check", stdout)
	path := fs.String("config", "/etc/certgate/certgate.yaml", "configuration file")
	timeout := fs.Duration("timeout", 30*time.Second, "time allowed per mailbox")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if len(cfg.Seeds.Mailboxes) == 0 {
		return fmt.Errorf("%s has no seeds.mailboxes", *path)
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SEED\tPROVIDER\tSTATUS\tIDLE\tSPECIAL-USE\tGMAIL\tJUNK FOLDER\tINBOX\tJUNK")
	failed := 0
	logins := newSeedLogins(cfg.Seeds)
	for _, m := range cfg.Seeds.Mailboxes {
		ctx, cancel := context.WithTimeout(context.Background(), *timeout)
		c := placement.CheckMailbox(ctx, logins.connect, m)
		cancel()
		status := "ok"
		if c.Err != nil {
			failed++
			status = "FAILED: " + c.Err.Error()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", m.Name, m.Provider, status, yesNo(c.IDLE), yesNo(c.SpecialUse),
			yesNo(c.Gmail), orDash(c.Junk), c.Messages[0], c.Messages[1])
	}
	tw.Flush()
	if failed > 0 {
		return fmt.Errorf("%d of %d seed mailboxes failed", failed, len(cfg.Seeds.Mailboxes))
	}
	return nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
