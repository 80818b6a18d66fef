package main

import (
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"text/tabwriter"
	"time"
)

// cmdLanes runs "certgate lanes": the running daemon's lanes, as a table.
func cmdLanes(args []string, stdout io.Writer) error {
	fs := newFlags("lanes", stdout)
	path := fs.String("config", "/etc/certgate/certgate.yaml", "configuration file (for http.listen)")
	base := fs.String("url", "", "certgate's HTTP address (default: http.listen of --config)")
	tokenFile := fs.String("token-file", "", "file holding an API token with the read scope (or set CERTGATE_TOKEN)")
	if err := fs.Parse(args); err != nil {
		return usageError{err}
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
	var out struct {
		Lanes []struct {
			Name       string                    `json:"name"`
			State      string                    `json:"state"`
			Rate       *float64                  `json:"rate_per_second"`
			Configured *float64                  `json:"configured_per_second"`
			Queue      map[string]map[string]int `json:"queue"`
			Reason     string                    `json:"reason"`
			Until      *time.Time                `json:"until"`
			Tenants    map[string]struct {
				Day, Left int
				Until     time.Time
			} `json:"tenant_warmups"`
		} `json:"lanes"`
	}
	if err := client.do("GET", "/api/v1/lanes", "", nil, http.StatusOK, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "LANE\tSTATE\tRATE\tCONFIGURED\tQUEUED (transactional/bulk)\tUNTIL\tREASON")
	for _, l := range out.Lanes {
		until := "-"
		if l.Until != nil {
			until = l.Until.Local().Format("Jan 2 15:04:05")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", l.Name, l.State, perMinute(l.Rate), perMinute(l.Configured),
			total(l.Queue["transactional"]), total(l.Queue["bulk"]), until, orDash(l.Reason))
		for _, tenant := range slices.Sorted(maps.Keys(l.Tenants)) {
			w := l.Tenants[tenant]
			fmt.Fprintf(tw, "  %s\twarming\t\t\t\t%s\twarm-up day %d of tenant %s: %d bulk left today\n",
				tenant, w.Until.Local().Format("Jan 2 15:04:05"), w.Day, tenant, w.Left)
		}
	}
	return tw.Flush()
}

// perMinute shows a rate in messages per minute, as operators configure it.
func perMinute(perSecond *float64) string {
	if perSecond == nil {
		return "unlimited"
	}
	return fmt.Sprintf("%.4g/min", *perSecond*60)
}

func total(byTenant map[string]int) int {
	n := 0
	for _, v := range byTenant {
		n += v
	}
	return n
}
