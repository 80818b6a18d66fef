// Package certgate_test holds the map of certgate's packages to the test
// suite: which package may import which (docs/architecture.md). A change
// that makes an import run the wrong way fails here, with the rule it
// breaks.
package certgate_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/certgate/certgate/"

// mayImport lists, for each package, the packages of ours it may import
// (outside its tests). Imports run one way: the binary, then the mail
// path (gateway, delivery, api, webhook), then policy and quarantine, then
// store; config, metrics, mimeedit, clock and membudget are leaves. sim is for demo
// and tests only, demo for the binary's demo subcommand only.
var mayImport = map[string][]string{
	"config":               {},
	"metrics":              {},
	"mimeedit":             {},
	"clock":                {},
	"membudget":            {},
	"sim":                  {},
	"store":                {},
	"store/sqlite":         {"store"},
	"store/storetest":      {"store"},
	"store/postgres":       {"store"},
	"policy":               {"config", "clock"},
	"policy/limitertest":   {"policy"},
	"policy/redislimit":    {"policy"},
	"cluster":              {"clock", "store"},
	"placement":            {"clock", "config", "mimeedit", "store"},
	"quarantine":           {"config", "metrics", "mimeedit", "store", "clock", "internal/lang"},
	"webhook":              {"config", "store", "clock"},
	"gateway/signer":       {"config", "mimeedit", "internal/mailaddr"},
	"gateway":              {"config", "metrics", "membudget", "mimeedit", "gateway/signer", "quarantine", "store", "internal/mailaddr"},
	"compose":              {"config", "internal/lang", "internal/mailaddr"},
	"delivery":             {"config", "membudget", "metrics", "policy", "store", "clock"},
	"api":                  {"compose", "config", "metrics", "quarantine", "store", "dnscheck"},
	"console":              {"api", "clock", "config", "internal/lang", "quarantine", "store"},
	"dnscheck":             {"config", "clock", "gateway/signer"},
	"dnscheck/dnstest":     {},
	"demo":                 {"config", "sim", "gateway/signer", "mimeedit", "internal/testpg", "internal/testredis"},
	"kit":                  {"config", "internal/lang"},
	"cmd/certgate":         {"compose", "config", "metrics", "membudget", "mimeedit", "clock", "store", "store/sqlite", "store/postgres", "policy", "policy/redislimit", "cluster", "placement", "quarantine", "webhook", "gateway/signer", "gateway", "delivery", "api", "console", "demo", "dnscheck", "kit", "internal/lang"},
	"internal/testdovecot": {"internal/loopback"},
	"internal/testpg":      {"internal/loopback"},
	"internal/testredis":   {"internal/loopback"},
	"internal/loopback":    {},
	"internal/lang":        {},
	"internal/mailaddr":    {},
	"internal/browsertest": {},
	"bench/seedbench":      {"config", "internal/testdovecot", "placement", "store", "store/sqlite"},
	"bench/reaction":       {"config", "delivery", "metrics", "policy", "sim", "store", "store/sqlite"},
	"bench/probe":          {},
	"bench/sink":           {},
	"bench/sendbench":      {},
	"bench/clusterbench":   {},
}

func TestImportsRunOneWay(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...").Output()
	if err != nil {
		t.Skipf("go list: %v (the go command is needed to read the import graph)", err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, ok := strings.CutPrefix(fields[0], module)
		if !ok {
			continue
		}
		seen[pkg] = true
		allowed, known := mayImport[pkg]
		if !known {
			t.Errorf("package %s is not on the map: add it to mayImport and to docs/architecture.md", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			dep, ours := strings.CutPrefix(imp, module)
			if ours && !slices.Contains(allowed, dep) {
				t.Errorf("%s imports %s, which the map does not allow (docs/architecture.md)", pkg, dep)
			}
		}
	}
	for pkg := range mayImport {
		if !seen[pkg] {
			t.Errorf("the map lists %s, which does not exist", pkg)
		}
	}
}
