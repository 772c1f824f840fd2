// Command schemadoc writes the comment above each value of charts/herald/values.yaml into the
// description of that value's property in values.schema.json, so that the two cannot drift:
// `helm show values` and editors reading the schema say the same thing. With -check it changes
// nothing and fails if the schema is not up to date.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

func main() {
	values := flag.String("values", "charts/herald/values.yaml", "the chart's values")
	schema := flag.String("schema", "charts/herald/values.schema.json", "the chart's values schema")
	check := flag.Bool("check", false, "fail if the schema's descriptions differ from the comments instead of writing them")
	flag.Parse()
	v, err := os.ReadFile(*values)
	if err == nil {
		var s, out []byte
		if s, err = os.ReadFile(*schema); err == nil {
			if out, err = Describe(v, s); err == nil {
				switch {
				case !*check:
					err = os.WriteFile(*schema, out, 0o644)
				case !bytes.Equal(out, s):
					err = fmt.Errorf("%s is not up to date with the comments of %s: run `make manifests`", *schema, *values)
				}
			}
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "schemadoc:", err)
		os.Exit(1)
	}
}

// Describe returns schema with the description of every property that values.yaml comments set
// to that comment (lines joined), keys in their order, indented by two spaces.
func Describe(values, schema []byte) ([]byte, error) {
	var v, s yaml.Node
	if err := yaml.Unmarshal(values, &v); err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	if err := yaml.Unmarshal(schema, &s); err != nil { // JSON is YAML: the node keeps the key order
		return nil, fmt.Errorf("schema: %w", err)
	}
	describe(s.Content[0], v.Content[0])
	var compact bytes.Buffer
	if err := writeJSON(&compact, s.Content[0]); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if err := json.Indent(&out, compact.Bytes(), "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// describe walks the schema's properties beside the values mapping.
func describe(schema, values *yaml.Node) {
	props := get(schema, "properties")
	if props == nil || values == nil || values.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(props.Content); i += 2 {
		name, prop := props.Content[i].Value, props.Content[i+1]
		key, val := entry(values, name)
		if key == nil {
			continue
		}
		if c := comment(key.HeadComment); c != "" {
			set(prop, "description", c)
		}
		describe(prop, val)
	}
}

// comment turns "# a\n# b" into "a b".
func comment(head string) string {
	var words []string
	for _, line := range strings.Split(head, "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#"))
		if line != "" {
			words = append(words, line)
		}
	}
	return strings.Join(words, " ")
}

func entry(m *yaml.Node, name string) (key, value *yaml.Node) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == name {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

func get(m *yaml.Node, name string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	_, v := entry(m, name)
	return v
}

// set puts key: value first among m's keys (replacing an earlier one).
func set(m *yaml.Node, key, value string) {
	if m.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			break
		}
	}
	k := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}
	v := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value}
	m.Content = append([]*yaml.Node{k, v}, m.Content...)
}

// writeJSON writes n as compact JSON, keys in their order.
func writeJSON(b *bytes.Buffer, n *yaml.Node) error {
	switch n.Kind {
	case yaml.MappingNode:
		b.WriteByte('{')
		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				b.WriteByte(',')
			}
			k, _ := json.Marshal(n.Content[i].Value)
			b.Write(k)
			b.WriteByte(':')
			if err := writeJSON(b, n.Content[i+1]); err != nil {
				return err
			}
		}
		b.WriteByte('}')
	case yaml.SequenceNode:
		b.WriteByte('[')
		for i, c := range n.Content {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := writeJSON(b, c); err != nil {
				return err
			}
		}
		b.WriteByte(']')
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!str":
			s, _ := json.Marshal(n.Value)
			b.Write(s)
		case "!!int", "!!float", "!!bool", "!!null":
			b.WriteString(n.Value)
		default:
			return fmt.Errorf("line %d: unexpected %s in JSON", n.Line, n.Tag)
		}
	default:
		return fmt.Errorf("line %d: unexpected YAML node kind %d in JSON", n.Line, n.Kind)
	}
	return nil
}
