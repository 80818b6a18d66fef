package lang

import (
	"strings"
	"testing"
)

func TestPick(t *testing.T) {
	supported := []string{"es", "pt-BR", "fr", "en"}
	for in, want := range map[string]string{
		"":                               "en",
		"de-DE,de;q=0.9":                 "en",
		"es-AR,es;q=0.9,en;q=0.8":        "es",
		"pt-PT":                          "pt-BR",
		"PT-br":                          "pt-BR",
		"en;q=0.5, fr;q=0.9":             "fr",
		"fr;q=0, en":                     "en",
		"fr;q=abc, es":                   "es",
		"es, fr":                         "es",
		strings.Repeat("de,", 40) + "fr": "en", // past the bound: not read
	} {
		if got := Pick(in, supported, "en"); got != want {
			t.Errorf("Pick(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Match("pt", supported); got != "pt-BR" {
		t.Errorf("Match(pt) = %q", got)
	}
	if got := Match("", supported); got != "" {
		t.Errorf("Match(\"\") = %q", got)
	}
}

func FuzzPick(f *testing.F) {
	f.Add("es-AR,es;q=0.9,en;q=0.8")
	f.Fuzz(func(t *testing.T, s string) {
		got := Pick(s, []string{"es", "pt-BR", "fr", "en"}, "en")
		switch got {
		case "es", "pt-BR", "fr", "en":
		default:
			t.Fatalf("Pick(%q) = %q", s, got)
		}
	})
}
