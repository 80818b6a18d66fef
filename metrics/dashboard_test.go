package metrics_test

// The Grafana dashboard (deploy/grafana/certgate.json) and the Prometheus
// alerts (deploy/prometheus/alerts.yml, with their unit tests in
// alerts_test.yml) query certgate's metrics by name. These tests read every
// expression in them and check each metric and label it names against the
// registry metrics.New builds, so that a renamed metric or label breaks
// the build instead of leaving a panel empty or an alert silent.

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"gopkg.in/yaml.v3"

	"github.com/certgate/certgate/metrics"
)

// awaiting lists the metrics the dashboard and the alerts query before they
// exist, with the labels they are planned with. Only the dashboard row
// titled awaitingRow and the rule group awaitingGroup may query them, and
// those places may query nothing else. A name that exists in the registry
// fails TestAwaitingMetricsDoNotExistYet: then take it off this list and
// move its panels and alerts to their ordinary rows and group.
var awaiting = map[string][]string{}

const (
	dashboardFile  = "../deploy/grafana/certgate.json"
	alertsFile     = "../deploy/prometheus/alerts.yml"
	alertTestsFile = "../deploy/prometheus/alerts_test.yml"
	operationsDoc  = "../docs/operations.md"

	// awaitingRow starts the title of the dashboard row that holds the
	// panels of the awaiting metrics; awaitingGroup names their rule group.
	awaitingRow   = "Awaiting issue 11's lane engine"
	awaitingGroup = "certgate-awaiting-lane-engine"

	// dsInput is the data source every query uses: the dashboard's
	// __inputs entry, which Grafana asks for on import.
	dsInput = "${DS_PROMETHEUS}"
)

// scrapeLabels are the labels Prometheus adds to every series it scrapes.
var scrapeLabels = []string{"job", "instance"}

// synthesized are series Prometheus makes itself: a target's up, and the
// state of the alerts. Their labels are not checked.
var synthesized = map[string]bool{"up": true, "ALERTS": true, "ALERTS_FOR_STATE": true}

// wantRows are the dashboard's rows issue 11 asks for, by the start of
// their titles.
var wantRows = []string{"Intake", "Queue", "Delivery", "Lanes", "Placement", "Gate"}

// family is a metric of the registry.
type family struct {
	labels []string // nil: unknown, not checked
	kind   string   // "histogram", "summary" or "" (counter, gauge, untyped)
	where  string
}

// registry returns every metric certgate exports, by name:
//   - every metric registered on the registry metrics.New builds, as the
//     registry describes them (a vector without children counts too);
//     whether one is a histogram or a summary comes from its field of the
//     Metrics struct, or from a gathered sample (the Go collector's);
//   - the collectors other packages register on metrics.Registry at run
//     time (cmd/certgate's inbox share, read from the store at each
//     scrape), found in the module's source by their prometheus.NewDesc.
func registry(t *testing.T) map[string]family {
	t.Helper()
	m := metrics.New()
	kinds := map[string]string{}
	v := reflect.ValueOf(m).Elem()
	for i := 0; i < v.NumField(); i++ {
		f, sf := v.Field(i), v.Type().Field(i)
		if !sf.IsExported() || sf.Type == reflect.TypeOf(m.Registry) {
			continue
		}
		if (f.Kind() == reflect.Interface || f.Kind() == reflect.Pointer) && f.IsNil() {
			continue
		}
		c, ok := f.Interface().(prometheus.Collector)
		if !ok {
			continue
		}
		kind := "other"
		switch typ := sf.Type.String(); {
		case strings.Contains(typ, "Histogram"):
			kind = "histogram"
		case strings.Contains(typ, "Summary"):
			kind = "summary"
		}
		for _, d := range describe(c) {
			name, _, err := parseDesc(d.String())
			if err != nil {
				t.Fatalf("metrics.%s: %v", sf.Name, err)
			}
			kinds[name] = kind
		}
	}
	gathered, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("gathering the registry: %v", err)
	}
	for _, mf := range gathered {
		switch mf.GetType() {
		case dto.MetricType_HISTOGRAM:
			kinds[mf.GetName()] = "histogram"
		case dto.MetricType_SUMMARY:
			kinds[mf.GetName()] = "summary"
		}
	}
	fams := map[string]family{}
	for _, d := range describe(m.Registry) {
		name, labels, err := parseDesc(d.String())
		if err != nil {
			t.Fatal(err)
		}
		kind := kinds[name]
		if kind == "other" {
			kind = ""
		}
		fams[name] = family{labels: labels, kind: kind, where: "metrics.New's registry"}
		delete(kinds, name)
	}
	for name, kind := range kinds {
		if kind != "" {
			t.Errorf("%s is a field of metrics.Metrics but metrics.New does not register it", name)
		}
	}
	for name, f := range sourceDescs(t) {
		if _, ok := fams[name]; !ok {
			fams[name] = f
		}
	}
	return fams
}

func describe(c prometheus.Collector) []*prometheus.Desc {
	ch := make(chan *prometheus.Desc)
	go func() { c.Describe(ch); close(ch) }()
	var ds []*prometheus.Desc
	for d := range ch {
		ds = append(ds, d)
	}
	return ds
}

var (
	descName   = regexp.MustCompile(`^Desc\{fqName: ("(?:[^"\\]|\\.)*")`)
	descLabels = regexp.MustCompile(`constLabels: \{([^}]*)\}, variableLabels: \{([^}]*)\}\}$`)
)

// parseDesc reads a metric's name and label names from Desc.String (the
// only way client_golang shows them).
func parseDesc(s string) (name string, labels []string, err error) {
	nm, lm := descName.FindStringSubmatch(s), descLabels.FindStringSubmatch(s)
	if nm == nil || lm == nil {
		return "", nil, fmt.Errorf("cannot read the descriptor %s", s)
	}
	if name, err = strconv.Unquote(nm[1]); err != nil {
		return "", nil, err
	}
	labels = []string{}
	for _, c := range strings.Split(lm[1], ",") {
		if n, _, ok := strings.Cut(c, "="); ok {
			labels = append(labels, strings.TrimSpace(n))
		}
	}
	for _, l := range strings.Split(lm[2], ",") {
		if l = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(l), "c("), ")"); l != "" {
			labels = append(labels, l)
		}
	}
	return name, labels, nil
}

// sourceDescs finds the metrics declared with prometheus.NewDesc in the
// module's Go files (tests excepted).
func sourceDescs(t *testing.T) map[string]family {
	t.Helper()
	fams := map[string]family{}
	fset := token.NewFileSet()
	err := filepath.WalkDir("..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != ".." && (strings.HasPrefix(n, ".") || n == "testdata" || n == "vendor" || n == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) < 3 {
				return true
			}
			if sel, ok := call.Fun.(*ast.SelectorExpr); !ok || sel.Sel.Name != "NewDesc" {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			name, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			var labels []string // unknown unless a literal list
			if cl, ok := call.Args[2].(*ast.CompositeLit); ok {
				labels = []string{}
				for _, e := range cl.Elts {
					if bl, ok := e.(*ast.BasicLit); ok && bl.Kind == token.STRING {
						l, _ := strconv.Unquote(bl.Value)
						labels = append(labels, l)
					} else {
						labels = nil
						break
					}
				}
			} else if id, ok := call.Args[2].(*ast.Ident); ok && id.Name == "nil" {
				labels = []string{}
			}
			fams[name] = family{labels: labels, where: fmt.Sprintf("prometheus.NewDesc in %s", fset.Position(lit.Pos()))}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatalf("reading the module's source: %v", err)
	}
	return fams
}

// ---------------------------------------------------------------------
// PromQL: just enough of it to find the metrics an expression selects.

// selector is one vector selector of an expression.
type selector struct {
	name   string
	labels []string // label names of its matchers
}

// promQL is what an expression selects and groups by.
type promQL struct {
	selectors []selector
	grouping  []string // labels of by, without, on, ignoring, group_left and group_right
}

type tok struct {
	kind string // ident, number, string, var, op
	text string
}

// lexPromQL splits an expression into tokens. Grafana's variables
// ($provider, ${__rate_interval}) are tokens of their own.
func lexPromQL(s string) ([]tok, error) {
	var toks []tok
	isIdent := func(c byte, first bool) bool {
		return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || !first && c >= '0' && c <= '9'
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(s) && s[j] != c {
				if s[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			toks = append(toks, tok{"string", s[i : j+1]})
			i = j + 1
		case c >= '0' && c <= '9' || c == '.' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			j := i
			for j < len(s) && (isIdent(s[j], false) || s[j] == '.') {
				j++
			}
			toks = append(toks, tok{"number", s[i:j]})
			i = j
		case c == '$':
			j := i + 1
			if j < len(s) && s[j] == '{' {
				for j < len(s) && s[j] != '}' {
					j++
				}
				j++
			} else {
				for j < len(s) && isIdent(s[j], false) {
					j++
				}
			}
			toks = append(toks, tok{"var", s[i:min(j, len(s))]})
			i = j
		case isIdent(c, true):
			j := i
			for j < len(s) && isIdent(s[j], false) {
				j++
			}
			toks = append(toks, tok{"ident", s[i:j]})
			i = j
		default:
			if i+1 < len(s) && slices.Contains([]string{"==", "!=", "=~", "!~", ">=", "<="}, s[i:i+2]) {
				toks = append(toks, tok{"op", s[i : i+2]})
				i += 2
			} else if strings.IndexByte("{}()[],+-*/%^=<>@", c) >= 0 {
				toks = append(toks, tok{"op", string(c)})
				i++
			} else {
				return nil, fmt.Errorf("unexpected %q at %d", c, i)
			}
		}
	}
	return toks, nil
}

var (
	groupingWords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
	otherWords    = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true, "inf": true, "nan": true,
		// aggregations, which may be followed by "by (...)" instead of "("
		"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true, "count": true,
		"count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true}
)

// parsePromQL finds the selectors and grouping labels of an expression:
// function and aggregation names (an identifier before a parenthesis),
// keywords, strings, numbers, durations and ranges are not metric names.
func parsePromQL(expr string) (promQL, error) {
	toks, err := lexPromQL(expr)
	if err != nil {
		return promQL{}, err
	}
	var q promQL
	is := func(i int, text string) bool { return i < len(toks) && toks[i].kind == "op" && toks[i].text == text }
	// matchers reads {a="x", b=~"y"} from toks[i] ("{") and returns the
	// label names, the metric name of a __name__="..." matcher, and the
	// index after "}".
	matchers := func(i int) (labels []string, name string, next int, err error) {
		i++
		for !is(i, "}") {
			if i+2 >= len(toks) || toks[i].kind != "ident" || toks[i+1].kind != "op" || toks[i+2].kind != "string" {
				return nil, "", 0, fmt.Errorf("cannot read the label matchers of %q", expr)
			}
			l, op := toks[i].text, toks[i+1].text
			if l == "__name__" {
				if op != "=" {
					return nil, "", 0, fmt.Errorf("%q selects metrics by a pattern, which cannot be checked", expr)
				}
				name, _ = strconv.Unquote(toks[i+2].text)
			} else {
				labels = append(labels, l)
			}
			i += 3
			if is(i, ",") {
				i++
			}
		}
		return labels, name, i + 1, nil
	}
	for i := 0; i < len(toks); {
		t := toks[i]
		switch {
		case t.kind == "op" && t.text == "[":
			for i < len(toks) && !is(i, "]") {
				i++
			}
			i++
		case t.kind == "op" && t.text == "{":
			labels, name, next, err := matchers(i)
			if err != nil {
				return promQL{}, err
			}
			if name == "" {
				return promQL{}, fmt.Errorf("%q has a selector without a metric name", expr)
			}
			q.selectors = append(q.selectors, selector{name, labels})
			i = next
		case t.kind == "ident" && groupingWords[strings.ToLower(t.text)]:
			i++
			if is(i, "(") {
				for i++; i < len(toks) && !is(i, ")"); i++ {
					if toks[i].kind == "ident" {
						q.grouping = append(q.grouping, toks[i].text)
					}
				}
				i++
			}
		case t.kind == "ident" && otherWords[strings.ToLower(t.text)]:
			i++
		case t.kind == "ident" && is(i+1, "("):
			i++ // a function or an aggregation
		case t.kind == "ident":
			sel := selector{name: t.text}
			i++
			if is(i, "{") {
				labels, name, next, err := matchers(i)
				if err != nil {
					return promQL{}, err
				}
				if name != "" {
					return promQL{}, fmt.Errorf("%q names its metric twice", expr)
				}
				sel.labels, i = labels, next
			}
			q.selectors = append(q.selectors, sel)
		default:
			i++
		}
	}
	return q, nil
}

// grafanaQuery turns a Grafana variable query into PromQL:
// label_values(selector, label) selects with its first argument (and
// reads the label), label_values(label) selects nothing, and
// query_result(expr) runs expr.
func grafanaQuery(q string) (expr string, label string) {
	q = strings.TrimSpace(q)
	if inner, ok := strings.CutPrefix(q, "label_values("); ok {
		inner = strings.TrimSuffix(inner, ")")
		if i := strings.LastIndex(inner, ","); i >= 0 {
			return strings.TrimSpace(inner[:i]), strings.TrimSpace(inner[i+1:])
		}
		return "", strings.TrimSpace(inner)
	}
	if inner, ok := strings.CutPrefix(q, "query_result("); ok {
		return strings.TrimSuffix(inner, ")"), ""
	}
	return q, ""
}

func TestParsePromQL(t *testing.T) {
	for _, c := range []struct {
		expr      string
		selectors string // name{labels} ...
		grouping  string
	}{
		{`up`, `up{}`, ``},
		{`sum by (provider, class) (rate(certgate_x_total{instance=~"$instance", provider=~"a|b"}[$__rate_interval]))`,
			`certgate_x_total{instance,provider}`, `provider,class`},
		{`histogram_quantile(0.99, sum(rate(h_bucket{a="}{,"}[5m])) by (le))`, `h_bucket{a}`, `le`},
		{`a > 0.7 and on (provider) sum without(x) (increase(b[1h] offset 1d)) >= 5 or vector(0)`, `a{} b{}`, `provider,x`},
		{`x{m="dkim"} unless x{m="dkim"} offset 30m > 0`, `x{m} x{m}`, ``},
		{`{__name__="n", l!="v"} * on(l) group_left(k) rec:rule:sum`, `n{l} rec:rule:sum{}`, `l,k`},
		{`max_over_time(a[10m:1m]) / 4 * 3600 + 1e3 - .5 # comment b`, `a{}`, ``},
		{`count_values("le", c) or topk(5, d{x='y'}) or abs(-e)`, `c{} d{x} e{}`, ``},
		{`sum without (a) (f) / ignoring(b) count by (c) (g)`, `f{} g{}`, `a,b,c`},
	} {
		q, err := parsePromQL(c.expr)
		if err != nil {
			t.Errorf("parsePromQL(%q): %v", c.expr, err)
			continue
		}
		var sels []string
		for _, s := range q.selectors {
			sels = append(sels, s.name+"{"+strings.Join(s.labels, ",")+"}")
		}
		if got := strings.Join(sels, " "); got != c.selectors {
			t.Errorf("parsePromQL(%q) selectors = %s, want %s", c.expr, got, c.selectors)
		}
		if got := strings.Join(q.grouping, ","); got != c.grouping {
			t.Errorf("parsePromQL(%q) grouping = %s, want %s", c.expr, got, c.grouping)
		}
	}
	for _, bad := range []string{`{__name__=~"certgate_.*"}`, `{job="x"}`, `a{b="c"`, `a{b}`} {
		if _, err := parsePromQL(bad); err == nil {
			t.Errorf("parsePromQL(%q) accepted it", bad)
		}
	}
	if e, l := grafanaQuery(`label_values(m{instance=~"$instance"}, provider)`); e != `m{instance=~"$instance"}` || l != "provider" {
		t.Errorf("grafanaQuery: %q %q", e, l)
	}
}

// ---------------------------------------------------------------------
// The queries of the dashboard and the rules.

// query is one PromQL expression of the dashboard or the alerts.
type query struct {
	where    string // for messages
	expr     string
	label    string // a label the query reads (a variable's label_values)
	awaiting bool   // in the place that may query awaiting metrics
}

func readDashboard(t *testing.T) map[string]any {
	t.Helper()
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// dashboardQueries returns every expression of the dashboard: panel
// targets, variables and annotations. It checks the layout on the way.
func dashboardQueries(t *testing.T, d map[string]any) []query {
	t.Helper()
	var qs []query
	panels, _ := d["panels"].([]any)
	// Grafana places panels by gridPos, not by their order in the file:
	// a panel belongs to the row above it.
	type placed struct {
		p    map[string]any
		x, y int
	}
	var flat []placed
	for _, p := range panels {
		pm := p.(map[string]any)
		g, _ := pm["gridPos"].(map[string]any)
		x, _ := g["x"].(float64)
		y, _ := g["y"].(float64)
		flat = append(flat, placed{pm, int(x), int(y)})
	}
	if !sort.SliceIsSorted(flat, func(i, j int) bool {
		return flat[i].y < flat[j].y || flat[i].y == flat[j].y && flat[i].x < flat[j].x
	}) {
		t.Errorf("%s: the panels are not in the order of their gridPos (top to bottom, left to right)", dashboardFile)
	}
	row := ""
	addTargets := func(p map[string]any, row string) {
		title, _ := p["title"].(string)
		targets, _ := p["targets"].([]any)
		if p["type"] != "row" && p["type"] != "text" && len(targets) == 0 {
			t.Errorf("%s: panel %q has no query", dashboardFile, title)
		}
		refs := map[string]bool{}
		for _, tg := range targets {
			tm := tg.(map[string]any)
			ref, _ := tm["refId"].(string)
			if ref == "" || refs[ref] {
				t.Errorf("%s: panel %q: a target without a refId or with a duplicate one (%q)", dashboardFile, title, ref)
			}
			refs[ref] = true
			expr, _ := tm["expr"].(string)
			qs = append(qs, query{
				where:    fmt.Sprintf("dashboard panel %q (row %q) target %s", title, row, ref),
				expr:     expr,
				awaiting: strings.HasPrefix(row, awaitingRow),
			})
		}
	}
	var rows []string
	for _, f := range flat {
		if f.p["type"] == "row" {
			row, _ = f.p["title"].(string)
			rows = append(rows, row)
			nested, _ := f.p["panels"].([]any) // a collapsed row keeps its panels
			for _, n := range nested {
				addTargets(n.(map[string]any), row)
			}
			continue
		}
		addTargets(f.p, row)
	}
	for _, want := range wantRows {
		if !slices.ContainsFunc(rows, func(r string) bool { return strings.HasPrefix(r, want) }) {
			t.Errorf("%s: no row %q (rows: %q)", dashboardFile, want, rows)
		}
	}
	templating, _ := d["templating"].(map[string]any)
	vars, _ := templating["list"].([]any)
	for _, v := range vars {
		vm := v.(map[string]any)
		if vm["type"] != "query" {
			continue
		}
		q := vm["query"]
		if qm, ok := q.(map[string]any); ok {
			q = qm["query"]
		}
		qstr, _ := q.(string)
		expr, label := grafanaQuery(qstr)
		qs = append(qs, query{where: fmt.Sprintf("dashboard variable %q", vm["name"]), expr: expr, label: label})
	}
	annotations, _ := d["annotations"].(map[string]any)
	list, _ := annotations["list"].([]any)
	for _, a := range list {
		am := a.(map[string]any)
		if expr, ok := am["expr"].(string); ok {
			qs = append(qs, query{where: fmt.Sprintf("dashboard annotation %q", am["name"]), expr: expr})
		}
	}
	// Every "expr" anywhere in the file must have been seen above: a new
	// kind of panel that nests its queries elsewhere is not missed.
	var all int
	walkJSON(d, func(key string, v any) {
		if _, ok := v.(string); ok && key == "expr" {
			all++
		}
	})
	seen := 0
	for _, q := range qs {
		if !strings.HasPrefix(q.where, "dashboard variable") {
			seen++
		}
	}
	if all != seen {
		t.Errorf("%s has %d expr fields, of which the test read %d: teach dashboardQueries where the others are", dashboardFile, all, seen)
	}
	return qs
}

// walkJSON calls f with every key and value of a decoded JSON document.
func walkJSON(v any, f func(key string, v any)) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			f(k, e)
			walkJSON(e, f)
		}
	case []any:
		for _, e := range v {
			walkJSON(e, f)
		}
	}
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

type ruleGroup struct {
	Name  string `yaml:"name"`
	Rules []rule `yaml:"rules"`
}

func readRules(t *testing.T) []ruleGroup {
	t.Helper()
	data, err := os.ReadFile(alertsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []ruleGroup `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		t.Fatalf("%s: %v", alertsFile, err)
	}
	if len(f.Groups) == 0 {
		t.Fatalf("%s has no rule groups", alertsFile)
	}
	return f.Groups
}

func ruleQueries(groups []ruleGroup) []query {
	var qs []query
	for _, g := range groups {
		for _, r := range g.Rules {
			name := "alert " + r.Alert
			if r.Record != "" {
				name = "recording rule " + r.Record
			}
			qs = append(qs, query{where: fmt.Sprintf("%s (group %s)", name, g.Name), expr: r.Expr, awaiting: g.Name == awaitingGroup})
		}
	}
	return qs
}

type ruleTests struct {
	RuleFiles          []string `yaml:"rule_files"`
	EvaluationInterval string   `yaml:"evaluation_interval"`
	GroupEvalOrder     []string `yaml:"group_eval_order"`
	Tests              []struct {
		Interval    string `yaml:"interval"`
		InputSeries []struct {
			Series string `yaml:"series"`
			Values string `yaml:"values"`
		} `yaml:"input_series"`
		AlertRuleTests []struct {
			EvalTime  string           `yaml:"eval_time"`
			Alertname string           `yaml:"alertname"`
			ExpAlerts []map[string]any `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
		PromQLExprTests []struct {
			Expr       string           `yaml:"expr"`
			EvalTime   string           `yaml:"eval_time"`
			ExpSamples []map[string]any `yaml:"exp_samples"`
		} `yaml:"promql_expr_test"`
		ExternalLabels map[string]string `yaml:"external_labels"`
		ExternalURL    string            `yaml:"external_url"`
	} `yaml:"tests"`
}

func readRuleTests(t *testing.T) ruleTests {
	t.Helper()
	data, err := os.ReadFile(alertTestsFile)
	if err != nil {
		t.Fatal(err)
	}
	var rt ruleTests
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&rt); err != nil {
		t.Fatalf("%s: %v", alertTestsFile, err)
	}
	return rt
}

// checkQueries checks each query's metrics and labels against the
// registry, the awaiting list and the recording rules.
func checkQueries(t *testing.T, fams map[string]family, records map[string]bool, qs []query) {
	t.Helper()
	for _, q := range qs {
		if strings.TrimSpace(q.expr) == "" {
			if q.label == "" {
				t.Errorf("%s: empty expression", q.where)
			}
			continue
		}
		p, err := parsePromQL(q.expr)
		if err != nil {
			t.Errorf("%s: %v", q.where, err)
			continue
		}
		if len(p.selectors) == 0 {
			t.Errorf("%s: %q selects no metric", q.where, q.expr)
			continue
		}
		// allowed collects the labels the query's series have; nil once
		// one of them has unknown labels.
		allowed := map[string]bool{}
		for _, l := range scrapeLabels {
			allowed[l] = true
		}
		usesAwaiting := false
		for _, s := range p.selectors {
			labels, known := labelsOf(t, q, s.name, fams, records)
			if _, ok := awaiting[s.name]; ok {
				usesAwaiting = true
			}
			if !known {
				allowed = nil
				continue
			}
			own := map[string]bool{"__name__": true}
			for _, l := range append(labels, scrapeLabels...) {
				own[l] = true
				if allowed != nil {
					allowed[l] = true
				}
			}
			for _, l := range s.labels {
				if !own[l] {
					t.Errorf("%s: %s has no label %q (it has %q)", q.where, s.name, l, labels)
				}
			}
		}
		if allowed != nil {
			for _, l := range append(p.grouping, q.label) {
				if l != "" && !allowed[l] {
					t.Errorf("%s: label %q is on none of the series of %q", q.where, l, q.expr)
				}
			}
		}
		if q.awaiting && !usesAwaiting {
			t.Errorf("%s is in the place for metrics awaiting the lane engine, but queries none of them: move it to its ordinary row or group", q.where)
		}
	}
}

// labelsOf returns the labels of the series a name selects, and whether
// they are known; it reports a name that does not exist.
func labelsOf(t *testing.T, q query, name string, fams map[string]family, records map[string]bool) ([]string, bool) {
	t.Helper()
	if planned, ok := awaiting[name]; ok {
		if !q.awaiting {
			t.Errorf("%s queries %s, which awaits issue 11's lane engine: only the dashboard row %q... and the rule group %s may query it", q.where, name, awaitingRow, awaitingGroup)
		}
		return planned, true
	}
	if synthesized[name] || records[name] {
		return nil, false
	}
	if f, ok := fams[name]; ok {
		switch {
		case f.kind == "histogram":
			t.Errorf("%s queries the histogram %s itself: its series are %[2]s_bucket, %[2]s_sum and %[2]s_count", q.where, name)
		case f.kind == "summary" && f.labels != nil:
			return append(slices.Clone(f.labels), "quantile"), true
		}
		return f.labels, f.labels != nil
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suffix)
		if !ok {
			continue
		}
		f, ok := fams[base]
		if !ok || f.kind == "" || f.kind == "summary" && suffix == "_bucket" {
			break
		}
		if f.labels == nil {
			return nil, false
		}
		if suffix == "_bucket" {
			return append(slices.Clone(f.labels), "le"), true
		}
		return f.labels, true
	}
	t.Errorf("%s queries %s, which certgate does not export (metrics/metrics.go); if it is planned, add it to awaiting with a comment", q.where, name)
	return nil, false
}

func recordingRules(groups []ruleGroup) map[string]bool {
	records := map[string]bool{}
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				records[r.Record] = true
			}
		}
	}
	return records
}

// ---------------------------------------------------------------------

func TestDashboardQueriesExistingMetrics(t *testing.T) {
	fams := registry(t)
	d := readDashboard(t)
	qs := dashboardQueries(t, d)
	if len(qs) < 20 {
		t.Fatalf("%s: only %d queries found", dashboardFile, len(qs))
	}
	checkQueries(t, fams, recordingRules(readRules(t)), qs)
}

func TestDashboardImportsCleanly(t *testing.T) {
	d := readDashboard(t)
	if v, _ := d["schemaVersion"].(float64); v < 36 {
		t.Errorf("schemaVersion %v: Grafana 9.4 or later (36+) is assumed", d["schemaVersion"])
	}
	for _, k := range []string{"uid", "title"} {
		if s, _ := d[k].(string); s == "" {
			t.Errorf("the dashboard has no %s", k)
		}
	}
	if d["id"] != nil {
		t.Errorf("the dashboard has id %v: an exported dashboard has null, or the import overwrites another", d["id"])
	}
	inputs, _ := d["__inputs"].([]any)
	found := false
	for _, in := range inputs {
		im := in.(map[string]any)
		if "${"+fmt.Sprint(im["name"])+"}" == dsInput && im["type"] == "datasource" && im["pluginId"] == "prometheus" {
			found = true
		}
	}
	if !found {
		t.Errorf("__inputs lacks the Prometheus data source input %s", dsInput)
	}
	// Every data source is the input (or Grafana's own, for the built-in
	// annotations): a concrete uid would not exist where it is imported.
	walkJSON(d, func(key string, v any) {
		if key != "datasource" {
			return
		}
		ds, ok := v.(map[string]any)
		if !ok {
			t.Errorf("a data source given as %v, not as {type, uid}", v)
			return
		}
		if ds["type"] == "grafana" {
			return
		}
		if ds["type"] != "prometheus" || ds["uid"] != dsInput {
			t.Errorf("data source %v: want {type: prometheus, uid: %s}", ds, dsInput)
		}
	})
	// Panels: unique ids, inside the 24 columns, not overlapping.
	type rect struct {
		title      string
		x, y, w, h int
	}
	var rects []rect
	ids := map[float64]string{}
	var visit func(ps []any)
	visit = func(ps []any) {
		for _, p := range ps {
			pm := p.(map[string]any)
			title, _ := pm["title"].(string)
			id, _ := pm["id"].(float64)
			if other, dup := ids[id]; dup || id == 0 {
				t.Errorf("panel %q: id %v missing or also used by %q", title, id, other)
			}
			ids[id] = title
			g, _ := pm["gridPos"].(map[string]any)
			num := func(k string) int { f, _ := g[k].(float64); return int(f) }
			r := rect{title, num("x"), num("y"), num("w"), num("h")}
			if r.w <= 0 || r.h <= 0 || r.x < 0 || r.x+r.w > 24 {
				t.Errorf("panel %q: gridPos %v is outside the 24 columns", title, g)
			}
			for _, o := range rects {
				if r.x < o.x+o.w && o.x < r.x+r.w && r.y < o.y+o.h && o.y < r.y+r.h {
					t.Errorf("panels %q and %q overlap", title, o.title)
				}
			}
			rects = append(rects, r)
			if nested, ok := pm["panels"].([]any); ok && pm["collapsed"] == true {
				visit(nested)
			}
			if pm["type"] != "row" && pm["type"] != "state-timeline" && pm["type"] != "text" {
				fc, _ := pm["fieldConfig"].(map[string]any)
				defaults, _ := fc["defaults"].(map[string]any)
				if u, _ := defaults["unit"].(string); u == "" {
					t.Errorf("panel %q has no unit", title)
				}
			}
		}
	}
	panels, _ := d["panels"].([]any)
	visit(panels)
}

func TestAlertRulesQueryExistingMetrics(t *testing.T) {
	fams := registry(t)
	groups := readRules(t)
	records := recordingRules(groups)
	checkQueries(t, fams, records, ruleQueries(groups))

	// The unit tests' input series name metrics too: a misspelt one would
	// make an alert's quiet case pass for the wrong reason.
	// Any test may feed the awaiting metrics to the rules it tests.
	var qs []query
	for i, tc := range readRuleTests(t).Tests {
		for _, s := range tc.InputSeries {
			_, planned := awaiting[strings.TrimSpace(strings.SplitN(s.Series, "{", 2)[0])]
			qs = append(qs, query{where: fmt.Sprintf("%s test %d series", alertTestsFile, i+1), expr: s.Series, awaiting: planned})
		}
	}
	checkQueries(t, fams, records, qs)
}

func TestAlertRulesHaveRunbooks(t *testing.T) {
	doc, err := os.ReadFile(operationsDoc)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, g := range readRules(t) {
		for _, r := range g.Rules {
			if r.Record != "" {
				continue
			}
			if r.Alert == "" || seen[r.Alert] {
				t.Errorf("group %s: an alert without a name or a second %q", g.Name, r.Alert)
				continue
			}
			seen[r.Alert] = true
			if s := r.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, s) {
				t.Errorf("%s: severity %q, want critical, warning or info", r.Alert, s)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if len(strings.TrimSpace(r.Annotations[a])) < 20 {
					t.Errorf("%s: annotation %s missing or too short to help", r.Alert, a)
				}
			}
			if !strings.Contains(string(doc), r.Alert) {
				t.Errorf("%s is not in %s", r.Alert, operationsDoc)
			}
		}
	}
}

// TestAlertRulesAreUnitTested checks that alerts_test.yml has, for every
// alert, a case where it fires and one where it stays quiet.
func TestAlertRulesAreUnitTested(t *testing.T) {
	rt := readRuleTests(t)
	if !slices.Contains(rt.RuleFiles, filepath.Base(alertsFile)) {
		t.Errorf("%s does not test %s (rule_files: %q)", alertTestsFile, filepath.Base(alertsFile), rt.RuleFiles)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, a := range tc.AlertRuleTests {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	alerts := map[string]bool{}
	for _, g := range readRules(t) {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts[r.Alert] = true
			if !fires[r.Alert] {
				t.Errorf("%s: no case where %s fires", alertTestsFile, r.Alert)
			}
			if !quiet[r.Alert] {
				t.Errorf("%s: no case where %s stays quiet", alertTestsFile, r.Alert)
			}
		}
	}
	for name := range fires {
		if !alerts[name] {
			t.Errorf("%s tests %s, which %s does not have", alertTestsFile, name, alertsFile)
		}
	}
}

// TestAwaitingMetricsDoNotExistYet keeps the awaiting list honest: a name
// on it that certgate now exports must leave it (and its panels and alerts
// move out of the awaiting row and group), and a name that nothing queries
// has no business on it.
func TestAwaitingMetricsDoNotExistYet(t *testing.T) {
	fams := registry(t)
	for name := range awaiting {
		if f, ok := fams[name]; ok {
			t.Errorf("%s exists now (%s): take it off awaiting in metrics/dashboard_test.go, and move its panels out of the row %q... of %s and its alerts out of the group %s of %s (drop the row and the group when they are empty)",
				name, f.where, awaitingRow, dashboardFile, awaitingGroup, alertsFile)
		}
	}
	used := map[string]bool{}
	for _, q := range append(dashboardQueries(t, readDashboard(t)), ruleQueries(readRules(t))...) {
		if p, err := parsePromQL(q.expr); err == nil {
			for _, s := range p.selectors {
				used[s.name] = true
			}
		}
	}
	for name := range awaiting {
		if !used[name] {
			t.Errorf("%s is on the awaiting list but neither the dashboard nor the alerts query it", name)
		}
	}
}

// TestAlertRulesWithPromtool runs `promtool check rules` and `promtool test
// rules`, and has promtool parse the dashboard's expressions too (as
// recording rules, Grafana's interval variables replaced). Without
// promtool (Debian's prometheus package) it is skipped, or fails under
// CERTGATE_E2E=1 as the end-to-end suite does.
func TestAlertRulesWithPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		msg := "promtool is not installed (apt-get install --no-install-recommends prometheus; scripts/check.sh does)"
		if os.Getenv("CERTGATE_E2E") == "1" {
			t.Fatalf("%s\n(CERTGATE_E2E=1 requires it)", msg)
		}
		t.Skipf("skipping: %s (with CERTGATE_E2E=1 this is a failure)", msg)
	}
	for _, args := range [][]string{{"check", "rules", alertsFile}, {"test", "rules", alertTestsFile}} {
		abs, err := filepath.Abs(args[2])
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(promtool, args[0], args[1], abs)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s %s %s: %v\n%s", args[0], args[1], args[2], err, out)
		}
	}

	intervals := strings.NewReplacer("$__rate_interval", "5m", "${__rate_interval}", "5m", "$__interval", "1m", "${__interval}", "1m", "$__range", "1h", "${__range}", "1h")
	type recording struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []recording
	var where []string
	for _, q := range dashboardQueries(t, readDashboard(t)) {
		if strings.TrimSpace(q.expr) == "" {
			continue
		}
		rules = append(rules, recording{fmt.Sprintf("dashboard:query_%d", len(rules)+1), intervals.Replace(q.expr)})
		where = append(where, fmt.Sprintf("dashboard:query_%d is %s", len(rules), q.where))
	}
	data, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput(); err != nil {
		t.Errorf("promtool cannot parse the dashboard's expressions: %v\n%s\n%s", err, out, strings.Join(where, "\n"))
	}
}
