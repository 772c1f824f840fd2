package relaytest

import (
	"bytes"
	"context"
	"maps"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"

	"github.com/heraldhq/herald/api"
)

// Spec checks live answers against the published API documents (api/openapi.yaml and
// api/asyncapi.yaml): the status is documented for the operation, the content type is one it
// lists, and the body validates against its JSON Schema (draft 2020-12, formats asserted).
type Spec struct {
	openapi  map[string]any
	compiler *jsonschema.Compiler
	schemas  map[string]*jsonschema.Schema
}

const (
	openapiURL  = "https://herald.dev/api/openapi.json"
	asyncapiURL = "https://herald.dev/api/asyncapi.json"
)

// LoadSpec reads both documents; the OpenAPI one must also be valid OpenAPI 3.1 (kin-openapi).
func LoadSpec(t testing.TB) *Spec {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(api.OpenAPI)
	if err != nil {
		t.Fatalf("api/openapi.yaml: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("api/openapi.yaml is not valid OpenAPI: %v", err)
	}
	s := &Spec{compiler: jsonschema.NewCompiler(), schemas: map[string]*jsonschema.Schema{}}
	s.compiler.AssertFormat()
	for u, src := range map[string][]byte{openapiURL: api.OpenAPI, asyncapiURL: api.AsyncAPI} {
		j, err := yaml.YAMLToJSON(src)
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.compiler.AddResource(u, v); err != nil {
			t.Fatal(err)
		}
		if u == openapiURL {
			s.openapi = v.(map[string]any)
		}
	}
	return s
}

// schema compiles the schema at a JSON pointer of one document.
func (s *Spec) schema(t testing.TB, doc, pointer string) *jsonschema.Schema {
	t.Helper()
	loc := doc + "#" + (&url.URL{Fragment: pointer}).EscapedFragment()
	if sch, ok := s.schemas[loc]; ok {
		return sch
	}
	sch, err := s.compiler.Compile(loc)
	if err != nil {
		t.Fatalf("compiling %s: %v", loc, err)
	}
	s.schemas[loc] = sch
	return sch
}

// CheckResponse checks an answer to method on the documented path template (e.g.
// "/v1/channels/{channel}/messages") against openapi.yaml. body is the answer's body.
func (s *Spec) CheckResponse(t testing.TB, method, path string, resp *http.Response, body []byte) {
	t.Helper()
	opPtr := "/paths/" + escapePointer(path) + "/" + strings.ToLower(method)
	status := strconv.Itoa(resp.StatusCode)
	respPtr := opPtr + "/responses/" + status
	if _, ok := lookup(s.openapi, opPtr).(map[string]any); !ok {
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("openapi.yaml documents no %s %s", method, path)
		}
		respPtr = "/components/responses/Problem" // a method no operation has: 405, as every error
	}
	r, ok := lookup(s.openapi, respPtr).(map[string]any)
	if !ok {
		t.Fatalf("openapi.yaml does not document %s for %s %s (body %s)", status, method, path, body)
	}
	if ref, ok := r["$ref"].(string); ok {
		respPtr = strings.TrimPrefix(ref, "#")
		r = lookup(s.openapi, respPtr).(map[string]any)
	}
	content, _ := r["content"].(map[string]any)
	if len(content) == 0 {
		return
	}
	ct := resp.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		t.Fatalf("%s %s answered %s with Content-Type %q", method, path, status, ct)
	}
	media := mt
	if _, ok := content[media]; !ok {
		media = "*/*"
		if _, ok := content[media]; !ok {
			t.Fatalf("%s %s answered %s as %s; openapi.yaml lists %v", method, path, status, mt, slices.Sorted(maps.Keys(content)))
		}
	}
	if mt != "application/json" && !strings.HasSuffix(mt, "+json") {
		return
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s %s answered %s with a body that is not JSON: %q", method, path, status, body)
	}
	sch := s.schema(t, openapiURL, respPtr+"/content/"+escapePointer(media)+"/schema")
	if err := sch.Validate(v); err != nil {
		t.Fatalf("%s %s answered %s with a body openapi.yaml does not allow: %v\nbody: %s", method, path, status, err, body)
	}
}

// CheckEvent checks a CloudEvent a stream delivered (an SSE data line or a WebSocket frame)
// against asyncapi.yaml: a message event, or a gap event.
func (s *Spec) CheckEvent(t testing.TB, data []byte, gap bool) {
	t.Helper()
	name := "MessageEvent"
	if gap {
		name = "GapEvent"
	}
	s.CheckMessage(t, name, data)
}

// CheckMessage checks what a stream sent (or takes) against the schema name of asyncapi.yaml's
// components, such as EdgeReply.
func (s *Spec) CheckMessage(t testing.TB, name string, data []byte) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s is not JSON: %q", name, data)
	}
	if err := s.schema(t, asyncapiURL, "/components/schemas/"+name).Validate(v); err != nil {
		t.Fatalf("%s does not fit asyncapi.yaml's %s: %v", data, name, err)
	}
}

func escapePointer(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

func lookup(v any, pointer string) any {
	for _, tok := range strings.Split(strings.TrimPrefix(pointer, "/"), "/") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")]
	}
	return v
}
