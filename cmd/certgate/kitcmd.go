package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/certgate/certgate/config"
	"github.com/certgate/certgate/internal/lang"
	"github.com/certgate/certgate/kit"
)

// cmdKit prints a tenant's allowlisting kit, built from --config, for
// the issuer to send to its customers' mail admins.
func cmdKit(args []string, stdout io.Writer) error {
	fs := newFlags("kit", stdout)
	path := fs.String("config", "/etc/certgate/certgate.yaml", "configuration file")
	tenant := fs.String("tenant", "", "the tenant whose kit to print")
	l := fs.String("lang", "en", "language: "+strings.Join(kit.Languages, ", "))
	format := fs.String("format", "md", "format: "+strings.Join(kit.Formats, ", "))
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *tenant == "" {
		return usageError{errors.New("give the tenant with --tenant")}
	}
	language := lang.Match(*l, kit.Languages)
	if language == "" {
		return usageError{fmt.Errorf("--lang %q: the kit is in %s", *l, strings.Join(kit.Languages, ", "))}
	}
	if !slices.Contains(kit.Formats, *format) {
		return usageError{fmt.Errorf("--format %q: one of %s", *format, strings.Join(kit.Formats, ", "))}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	k, err := kit.NewDirectory(cfg).Kit(*tenant, language)
	if errors.Is(err, kit.ErrUnknownTenant) {
		names := make([]string, len(cfg.Tenants))
		for i, t := range cfg.Tenants {
			names[i] = t.Name
		}
		return usageError{fmt.Errorf("no tenant %q in %s (tenants: %s)", *tenant, *path, strings.Join(names, ", "))}
	}
	if err != nil {
		return err
	}
	return k.Write(stdout, *format)
}
