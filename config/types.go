package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// String formats d like time.Duration ("1h30m0s").
func (d Duration) String() string { return time.Duration(d).String() }

// UnmarshalYAML reads a Go duration string such as "90s", "15m" or "1h30m".
// A bare number other than 0 is rejected: "30" could mean seconds or
// minutes, so the unit must be written.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return nodeError(n, "expected a duration such as 90s or 1h30m, got %s", kindName(n))
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return nodeError(n, "%v", err)
	}
	*d = v
	return nil
}

// MarshalYAML writes d as a Go duration string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

var bareNumber = regexp.MustCompile(`^[+-]?[0-9]*\.?[0-9]+$`)

// ParseDuration parses a duration the way the configuration file does.
func ParseDuration(s string) (Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, fmt.Errorf("empty duration; write one such as 90s or 1h30m")
	}
	if bareNumber.MatchString(s) && s != "0" {
		return 0, fmt.Errorf("%q has no unit; write a Go duration such as %ss or %sm", s, s, s)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		if strings.HasSuffix(s, "d") || strings.HasSuffix(s, "w") {
			return 0, fmt.Errorf("%q is not a Go duration: there is no day or week unit; write hours, such as 72h", s)
		}
		return 0, fmt.Errorf("%q is not a Go duration; use units ns, us, ms, s, m, h, such as 90s or 1h30m", s)
	}
	return Duration(v), nil
}

// String formats r the way the configuration file writes it: "300/min",
// "10/s", "5000/h", or "unlimited".
func (r Rate) String() string {
	if r.Count == 0 {
		return "unlimited"
	}
	var unit string
	switch r.Period {
	case time.Second:
		unit = "s"
	case time.Minute:
		unit = "min"
	case time.Hour:
		unit = "h"
	case 24 * time.Hour:
		unit = "day"
	default:
		unit = r.Period.String()
	}
	return strconv.Itoa(r.Count) + "/" + unit
}

// rateUnits maps the period names a rate may use.
var rateUnits = map[string]time.Duration{
	"s": time.Second, "sec": time.Second, "second": time.Second,
	"m": time.Minute, "min": time.Minute, "minute": time.Minute,
	"h": time.Hour, "hour": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour,
}

// ParseRate parses a rate: "300/min", "10/s", "10/sec", "5000/h",
// "5000/hour", "100/day", or "0" / "unlimited" for no limit.
func ParseRate(s string) (Rate, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "0", "unlimited":
		return Rate{}, nil
	case "":
		return Rate{}, fmt.Errorf("empty rate; write one such as 300/min, or unlimited")
	}
	num, unit, ok := strings.Cut(s, "/")
	if !ok {
		if _, err := strconv.Atoi(s); err != nil {
			return Rate{}, fmt.Errorf("%q is not a rate; write one such as 300/min, 10/s or unlimited", s)
		}
		return Rate{}, fmt.Errorf("%q has no period; write a rate such as %s/min or %s/s (or unlimited)", s, s, s)
	}
	num, unit = strings.TrimSpace(num), strings.ToLower(strings.TrimSpace(unit))
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 || strings.HasPrefix(num, "+") {
		return Rate{}, fmt.Errorf("%q: the count must be a whole number, such as 300/min", s)
	}
	if n == 0 {
		return Rate{}, fmt.Errorf("%q would stop all traffic; write unlimited (or 0) for no limit", s)
	}
	per, ok := rateUnits[unit]
	if !ok {
		return Rate{}, fmt.Errorf("%q: unknown period %q; use s, min, h or day", s, unit)
	}
	return Rate{Count: n, Period: per}, nil
}

// UnmarshalYAML reads a rate written as in ParseRate.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return nodeError(n, "expected a rate such as 300/min, got %s", kindName(n))
	}
	v, err := ParseRate(n.Value)
	if err != nil {
		return nodeError(n, "%v", err)
	}
	*r = v
	return nil
}

// MarshalYAML writes r as in String.
func (r Rate) MarshalYAML() (any, error) { return r.String(), nil }

// nodeError reports a problem with one node in the form yaml.v3 collects
// (a *yaml.TypeError), so decoding goes on and every problem is reported.
// The column lets Parse find the exact key even when a line holds several.
func nodeError(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{
		fmt.Sprintf("line %d: column %d: %s", n.Line, n.Column, fmt.Sprintf(format, args...)),
	}}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.AliasNode:
		return "an alias"
	}
	return "a scalar"
}
