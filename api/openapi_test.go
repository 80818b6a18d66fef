package api

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/certgate/certgate/store"
)

type openAPIDoc struct {
	Paths      map[string]map[string]openAPIOp `yaml:"paths"`
	Components struct {
		Schemas map[string]openAPISchema `yaml:"schemas"`
	} `yaml:"components"`
}

type openAPIOp struct {
	Description string `yaml:"description"`
	Responses   map[string]struct {
		Content map[string]struct {
			Schema openAPISchema `yaml:"schema"`
		} `yaml:"content"`
	} `yaml:"responses"`
}

type openAPISchema struct {
	Ref        string                   `yaml:"$ref"`
	Required   []string                 `yaml:"required"`
	Properties map[string]openAPISchema `yaml:"properties"`
	AllOf      []openAPISchema          `yaml:"allOf"`
}

func loadOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	docs, err := os.ReadFile(filepath.Join("..", "docs", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(docs, openAPI) {
		t.Fatal("api/openapi.yaml differs from docs/openapi.yaml: copy docs/openapi.yaml over it")
	}
	var d openAPIDoc
	if err := yaml.Unmarshal(openAPI, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// Every route is described, with its scope, and nothing else is.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	d := loadOpenAPI(t)
	api := New(Deps{})
	documented := map[string]openAPIOp{}
	for path, ops := range d.Paths {
		for method, op := range ops {
			documented[strings.ToUpper(method)+" "+path] = op
		}
	}
	var served []string
	for _, r := range api.Routes() {
		key := r.Method + " " + r.Path
		served = append(served, key)
		op, ok := documented[key]
		if !ok {
			t.Errorf("%s is served but not in docs/openapi.yaml", key)
			continue
		}
		if !strings.Contains(op.Description, "Scope: "+string(r.Scope)+".") {
			t.Errorf("%s: the description does not say its scope is %s", key, r.Scope)
		}
		delete(documented, key)
	}
	for key := range documented {
		t.Errorf("%s is in docs/openapi.yaml but not served", key)
	}
	sort.Strings(served)
	t.Logf("routes: %v", served)
}

// Real responses carry what the description says they must.
func TestOpenAPIResponsesHaveTheirRequiredFields(t *testing.T) {
	d := loadOpenAPI(t)
	e := newAPIEnv(t)
	id := e.enqueue(1, "juan@empresa.example", store.StateHeld, store.LinkPending)
	check := func(method, path, body, docPath string) {
		t.Helper()
		resp := e.do(method, path, body)
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		op := d.Paths[docPath][strings.ToLower(method)]
		r, ok := op.Responses[resp.Status[:3]]
		if !ok {
			t.Fatalf("%s %s answered %s, which docs/openapi.yaml does not list", method, path, resp.Status)
		}
		var got map[string]any
		if err := json.Unmarshal(raw, &got); err != nil {
			t.Fatal(err)
		}
		requireFields(t, d, r.Content["application/json"].Schema, got, method+" "+path)
	}
	check("GET", "/api/v1/messages", "", "/api/v1/messages")
	check("GET", "/api/v1/messages/"+id, "", "/api/v1/messages/{id}")
	check("POST", "/api/v1/messages/"+id+"/release", "", "/api/v1/messages/{id}/release")
	check("POST", "/api/v1/release", `{"ids": ["`+id+`"]}`, "/api/v1/release")
	check("POST", "/api/v1/messages/"+id+"/links/revoke", "", "/api/v1/messages/{id}/links/revoke")
	check("GET", "/api/v1/messages/nope", "", "/api/v1/messages/{id}")
	check("GET", "/api/v1/messages/"+id+"?events_limit=0", "", "/api/v1/messages/{id}")
	check("GET", "/api/v1/messages?limit=0", "", "/api/v1/messages")

	resp, err := http.Get(e.srv.URL + "/api/v1/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(served, openAPI) {
		t.Fatal("/api/v1/openapi.yaml does not serve the description")
	}
}

func requireFields(t *testing.T, d openAPIDoc, s openAPISchema, got map[string]any, where string) {
	t.Helper()
	if s.Ref != "" {
		s = d.Components.Schemas[strings.TrimPrefix(s.Ref, "#/components/schemas/")]
	}
	for _, part := range s.AllOf {
		requireFields(t, d, part, got, where)
	}
	for _, f := range s.Required {
		if _, ok := got[f]; !ok {
			t.Errorf("%s: response lacks %q", where, f)
		}
	}
}
