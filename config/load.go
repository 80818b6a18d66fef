package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Load reads, decodes, defaults and validates the configuration file at
// path. See Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		msg := err.Error()
		var pe *fs.PathError
		if errors.As(err, &pe) {
			msg = "cannot read the file: " + pe.Err.Error()
		}
		return nil, &Errors{Problems: []Problem{{File: path, Msg: msg}}}
	}
	return Parse(path, data)
}

// Parse decodes data, the contents of the file at path, strictly (unknown
// keys are errors), applies the defaults, resolves relative file names
// against the directory of path, and validates the result. path is used for
// messages and relative names only; it is not read.
//
// On failure the error is a *Errors listing every problem found, each with
// its line, and the returned Config is nil. A nil error always comes with a
// non-nil Config.
func Parse(path string, data []byte) (*Config, error) {
	fail := func(ps ...Problem) (*Config, error) {
		for i := range ps {
			ps[i].File = path
		}
		sortProblems(ps)
		return nil, &Errors{Problems: ps}
	}

	// Pass 1: the node tree, for line numbers and for telling a key that is
	// absent from one set to its zero value. Syntax errors stop here.
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	err := safeDecode(dec, &doc)
	empty := errors.Is(err, io.EOF)
	if err != nil && !empty {
		return fail(yamlProblem(err))
	}
	var problems []Problem
	if !empty {
		var extra yaml.Node
		switch err := safeDecode(dec, &extra); {
		case err == nil:
			problems = append(problems, Problem{Line: firstLine(&extra), Msg: "only one YAML document is allowed; remove the second (after ---)"})
		case !errors.Is(err, io.EOF):
			return fail(yamlProblem(err))
		}
	}
	ix := newIndex(&doc)

	// Pass 2: strict decoding into the schema. yaml.v3 collects type errors
	// and unknown keys and goes on, so all of them are reported together.
	var cfg Config
	var bad []string
	if !empty {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		err := safeDecode(dec, &cfg)
		var te *yaml.TypeError
		switch {
		case err == nil, errors.Is(err, io.EOF):
		case errors.As(err, &te):
			for _, msg := range te.Errors {
				p, badPath, isBad := ix.typeProblem(msg)
				problems = append(problems, p)
				if isBad {
					bad = append(bad, badPath)
				}
			}
		default:
			return fail(append(problems, yamlProblem(err))...)
		}
	}

	cfg.Path = path
	cfg.resolvePaths(filepath.Dir(path), path != "")
	cfg.applyDefaults(ix.has)
	v := &validator{ix: ix, bad: bad, problems: problems}
	v.validate(&cfg)
	if len(v.problems) > 0 {
		return fail(v.problems...)
	}
	cfg.Warnings = v.warningsFor(path)
	return &cfg, nil
}

// safeDecode runs dec.Decode, turning a panic inside the YAML library into
// an error so that no input can crash the caller.
func safeDecode(dec *yaml.Decoder, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("cannot parse the YAML: %v", r)
		}
	}()
	return dec.Decode(v)
}

var yamlLineRe = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlProblem turns a syntax error ("yaml: line 3: did not find expected
// key") into a Problem.
func yamlProblem(err error) Problem {
	msg := err.Error()
	if m := yamlLineRe.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return Problem{Line: n, Msg: "invalid YAML: " + m[2]}
	}
	return Problem{Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// firstLine is the line of a document: its "---", or its first node.
func firstLine(n *yaml.Node) int {
	if n.Line > 0 {
		return n.Line
	}
	for n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	if n == nil {
		return 0
	}
	return n.Line
}

// resolvePaths makes relative file names relative to dir, the directory of
// the configuration file, so that they mean the same whatever the working
// directory of the daemon.
func (c *Config) resolvePaths(dir string, fromFile bool) {
	if !fromFile {
		return
	}
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.DataDir)
	abs(&c.Storage.DSNFile)
	if c.Cluster != nil && c.Cluster.Redis != nil {
		abs(&c.Cluster.Redis.PasswordFile)
		abs(&c.Cluster.Redis.CAFile)
	}
	abs(&c.SMTP.TLS.CertFile)
	abs(&c.SMTP.TLS.KeyFile)
	for i := range c.Tenants {
		for j := range c.Tenants[i].Users {
			abs(&c.Tenants[i].Users[j].PasswordHashFile)
		}
		abs(&c.Tenants[i].Templates)
	}
	for i := range c.DKIM {
		abs(&c.DKIM[i].KeyFile)
	}
	for i := range c.Delivery.Routes {
		r := &c.Delivery.Routes[i]
		abs(&r.CAFile)
		if r.Auth != nil {
			abs(&r.Auth.PasswordFile)
		}
	}
	for i := range c.API.Tokens {
		abs(&c.API.Tokens[i].TokenFile)
	}
	abs(&c.Gate.FormKeyFile)
	abs(&c.Console.SessionKeyFile)
	for i := range c.Webhooks {
		abs(&c.Webhooks[i].SecretFile)
	}
}

// ---- the node index: key paths to lines ----

// entry is one key (or list item) of the document.
type entry struct {
	path string
	key  *yaml.Node // nil for list items
	val  *yaml.Node
}

// index maps key paths such as tenants[0].users[1].username to the nodes of
// the document.
type index struct {
	entries []entry
	byPath  map[string]int
	byLine  map[int][]int // entries whose key or value starts on a line
}

func newIndex(doc *yaml.Node) *index {
	ix := &index{byPath: map[string]int{}, byLine: map[int][]int{}}
	if doc.Kind == yaml.DocumentNode && len(doc.Content) > 0 {
		ix.walk(doc.Content[0], "")
	}
	return ix
}

// walk records every key and item under n. Aliases are not followed: their
// target is indexed where it is defined.
func (ix *index) walk(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := childPath(path, k.Value)
			ix.add(entry{path: p, key: k, val: v})
			ix.walk(v, p)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := indexPath(path, i)
			ix.add(entry{path: p, val: c})
			ix.walk(c, p)
		}
	}
}

func (ix *index) add(e entry) {
	i := len(ix.entries)
	if _, dup := ix.byPath[e.path]; !dup {
		ix.byPath[e.path] = i
	}
	ix.entries = append(ix.entries, e)
	ix.byLine[e.val.Line] = append(ix.byLine[e.val.Line], i)
	if e.key != nil && e.key.Line != e.val.Line {
		ix.byLine[e.key.Line] = append(ix.byLine[e.key.Line], i)
	}
}

// onLine returns the entries whose key or value starts on line, in
// document order.
func (ix *index) onLine(line int) []entry {
	var out []entry
	for _, i := range ix.byLine[line] {
		out = append(out, ix.entries[i])
	}
	return out
}

var simpleKey = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// childPath is the path of key under parent: parent.key, or parent["key"]
// when the key holds dots or other punctuation (static_dns host names).
func childPath(parent, key string) string {
	if !simpleKey.MatchString(key) {
		return parent + "[" + strconv.Quote(key) + "]"
	}
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func indexPath(parent string, i int) string { return parent + "[" + strconv.Itoa(i) + "]" }

// parentPath strips the last element of a path ("a.b[2]" -> "a.b").
func parentPath(p string) string {
	segs := splitPath(p)
	if len(segs) == 0 {
		return ""
	}
	return strings.Join(segs[:len(segs)-1], "")
}

// splitPath cuts a path into its elements, each with its leading "." or
// "[" ("a.b[2]" -> "a", ".b", "[2]").
func splitPath(p string) []string {
	var segs []string
	start := 0
	for i := 0; i < len(p); {
		switch {
		case p[i] == '[':
			if i > start {
				segs = append(segs, p[start:i])
			}
			j := i + 1
			if j < len(p) && p[j] == '"' {
				q, err := strconv.QuotedPrefix(p[j:])
				if err != nil {
					return append(segs, p[i:])
				}
				j += len(q)
			}
			for j < len(p) && p[j] != ']' {
				j++
			}
			if j < len(p) {
				j++
			}
			segs = append(segs, p[i:j])
			i, start = j, j
		case p[i] == '.' && i > start:
			segs = append(segs, p[start:i])
			start = i
			i++
		default:
			i++
		}
	}
	if start < len(p) {
		segs = append(segs, p[start:])
	}
	return segs
}

// line returns the line of the key at path, or of its closest ancestor
// present in the document; 0 if none is.
func (ix *index) line(path string) int {
	if ix == nil {
		return 0
	}
	for {
		if i, ok := ix.byPath[path]; ok {
			e := ix.entries[i]
			if e.key != nil {
				return e.key.Line
			}
			return e.val.Line
		}
		if path == "" {
			return 0
		}
		path = parentPath(path)
	}
}

// has reports whether the document sets path to a non-null value.
func (ix *index) has(path string) bool {
	i, ok := ix.byPath[path]
	if !ok {
		return false
	}
	v := ix.entries[i].val
	return !(v.Kind == yaml.ScalarNode && v.ShortTag() == "!!null")
}

var (
	typeErrLineRe  = regexp.MustCompile(`^line (\d+): (?:column (\d+): )?(.*)$`)
	unknownFieldRe = regexp.MustCompile(`^field (.+) not found in type (\S+)$`)
	fieldSetRe     = regexp.MustCompile(`^field (.+) already set in type (\S+)$`)
	dupKeyRe       = regexp.MustCompile(`^mapping key (".*") already defined at line (\d+)$`)
	cannotRe       = regexp.MustCompile("^cannot unmarshal (\\S+)(?: `(.*)`)? into (.+)$")
)

// typeProblem turns one message of a *yaml.TypeError into a Problem, with
// the path of the key it is about. bad is a path whose decoded value cannot
// be trusted (validation stays quiet under it) and isBad whether there is
// one.
func (ix *index) typeProblem(msg string) (p Problem, bad string, isBad bool) {
	m := typeErrLineRe.FindStringSubmatch(msg)
	if m == nil {
		return Problem{Msg: msg}, "", false
	}
	line, _ := strconv.Atoi(m[1])
	p = Problem{Line: line, Msg: m[3]}
	rest := m[3]

	// The path whose value failed; a failed list item is dropped by the
	// decoder, which shifts the items after it, so the whole list is bad.
	badOf := func(path string) (string, bool) {
		if strings.HasSuffix(path, "]") && !strings.HasSuffix(path, "\"]") {
			return parentPath(path), true
		}
		return path, true
	}

	if m[2] != "" { // our own unmarshalers: line and column of the value
		col, _ := strconv.Atoi(m[2])
		for _, e := range ix.onLine(line) {
			if e.val.Line == line && e.val.Column == col {
				p.Path = e.path
				break
			}
		}
		bad, isBad = badOf(p.Path)
		return p, bad, isBad
	}
	if f := unknownFieldRe.FindStringSubmatch(rest); f != nil {
		p.Path = ix.keyAt(line, f[1])
		p.Msg = unknownKeyMsg(f[1], f[2])
		return p, "", false
	}
	if f := fieldSetRe.FindStringSubmatch(rest); f != nil {
		p.Path = ix.keyAt(line, f[1])
		p.Msg = "key set twice (through a merge); keep one"
		return p, "", false
	}
	if f := dupKeyRe.FindStringSubmatch(rest); f != nil {
		key, _ := strconv.Unquote(f[1])
		p.Path = ix.lastKeyAt(line, key)
		p.Msg = fmt.Sprintf("duplicate key %q (first on line %s); the mapping that holds it is ignored until one is removed", key, f[2])
		bad, isBad = badOf(parentPath(p.Path))
		return p, bad, isBad
	}
	if f := cannotRe.FindStringSubmatch(rest); f != nil {
		tag, val, goType := f[1], f[2], f[3]
		p.Path = ix.valueAt(line, tag, val)
		want := describeGoType(goType)
		p.Msg = fmt.Sprintf("expected %s, got %s", want, describeTag(tag, val))
		if want == "a list" && tag != "!!map" {
			p.Msg += " (write [value] for a list of one)"
		}
		bad, isBad = badOf(p.Path)
		return p, bad, isBad
	}
	p.Path = ix.valueAt(line, "", "")
	bad, isBad = badOf(p.Path)
	return p, bad, isBad
}

// keyAt finds the first key named name on line.
func (ix *index) keyAt(line int, name string) string {
	for _, e := range ix.onLine(line) {
		if e.key != nil && e.key.Line == line && e.key.Value == name {
			return e.path
		}
	}
	return ""
}

// lastKeyAt finds the last key named name on line (a duplicate is the
// later one).
func (ix *index) lastKeyAt(line int, name string) string {
	path := ""
	for _, e := range ix.onLine(line) {
		if e.key != nil && e.key.Line == line && e.key.Value == name {
			path = e.path
		}
	}
	return path
}

// valueAt finds the value on line that a "cannot unmarshal" message is
// about: same kind as tag and, for scalars, same (possibly shortened) text.
// Of several matches the deepest wins.
func (ix *index) valueAt(line int, tag, val string) string {
	best, bestDepth := "", -1
	for _, e := range ix.onLine(line) {
		n := e.val
		if n.Line != line {
			continue
		}
		switch tag {
		case "":
		case "!!seq":
			if n.Kind != yaml.SequenceNode {
				continue
			}
		case "!!map":
			if n.Kind != yaml.MappingNode {
				continue
			}
		default:
			if n.Kind != yaml.ScalarNode {
				continue
			}
			if short, ok := strings.CutSuffix(val, "..."); ok && len(n.Value) > 10 {
				if !strings.HasPrefix(n.Value, short) {
					continue
				}
			} else if n.Value != val {
				continue
			}
		}
		if d := len(splitPath(e.path)); d > bestDepth {
			best, bestDepth = e.path, d
		}
	}
	return best
}

func describeGoType(t string) string {
	t = strings.TrimPrefix(t, "*")
	switch t {
	case "config.Class", "config.LinkEnable", "config.Scope", "config.TLSMode", "config.DKIMEngine":
		return "a string"
	}
	switch {
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["), strings.HasPrefix(t, "config."):
		return "a mapping"
	case strings.HasPrefix(t, "int"), strings.HasPrefix(t, "uint"):
		return "a whole number"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a string"
	}
	return t
}

func describeTag(tag, val string) string {
	switch tag {
	case "!!seq":
		return "a list"
	case "!!map":
		return "a mapping"
	case "!!str":
		return "the string `" + val + "`"
	case "!!int", "!!float":
		return "the number " + val
	case "!!bool":
		return val
	case "!!null":
		return "nothing"
	}
	if val != "" {
		return tag + " `" + val + "`"
	}
	return tag
}

// ---- unknown keys: where do they belong? ----

// schemaKeys lists the keys of each schema type ("config.SMTP" -> listen,
// tls, ...) and, for each key name, the paths of the sections that have it
// ("max_recipients" -> smtp).
var schemaKeys, keyHomes = func() (map[string][]string, map[string][]string) {
	keys, homes := map[string][]string{}, map[string][]string{}
	var visit func(t reflect.Type, at string)
	visit = func(t reflect.Type, at string) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			if t.Kind() == reflect.Slice {
				at += "[]"
			}
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || keys[t.String()] != nil {
			return
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			keys[t.String()] = append(keys[t.String()], name)
			homes[name] = append(homes[name], at)
			child := name
			if at != "" {
				child = at + "." + name
			}
			visit(f.Type, child)
		}
	}
	visit(reflect.TypeOf(Config{}), "")
	return keys, homes
}()

// SchemaPaths lists the dotted path of every key of the schema, lists
// written with "[]" (tenants[].users[].username), in schema order.
func SchemaPaths() []string {
	var out []string
	var visit func(t reflect.Type, at string)
	visit = func(t reflect.Type, at string) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			if t.Kind() == reflect.Slice {
				at += "[]"
			}
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || t == reflect.TypeOf(Rate{}) {
			return
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			child := name
			if at != "" {
				child = at + "." + name
			}
			out = append(out, child)
			visit(f.Type, child)
		}
	}
	visit(reflect.TypeOf(Config{}), "")
	return out
}

func unknownKeyMsg(key, typ string) string {
	msg := fmt.Sprintf("unknown key %q", key)
	if homes := keyHomes[key]; len(homes) == 1 {
		if homes[0] == "" {
			return msg + "; it is a top-level key"
		}
		return msg + "; it belongs under " + homes[0]
	}
	best, bestDist := "", 3
	for _, k := range schemaKeys[typ] {
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	if best != "" {
		return msg + fmt.Sprintf("; did you mean %q?", best)
	}
	if ks := schemaKeys[typ]; len(ks) > 0 {
		return msg + "; valid keys here: " + strings.Join(ks, ", ")
	}
	return msg
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
