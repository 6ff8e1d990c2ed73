package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// docSchema checks JSON values against the schemas of an OpenAPI 3.1
// document, read with encoding/json. It is the fuzz targets' oracle of
// "satisfies the documented constraints", written independently of huma's
// validator (which is what the targets test). It knows the keywords
// riverbank's document uses; where it is unsure it accepts, because the
// property it serves is "a 2xx only for inputs that satisfy the schema":
// an oracle that is too lenient weakens the property, one that is too
// strict would report false failures.
type docSchema struct {
	doc  map[string]any
	mu   sync.Mutex
	pats map[string]*regexp.Regexp
}

func newDocSchema(openapiJSON []byte) (*docSchema, error) {
	var doc map[string]any
	if err := json.Unmarshal(openapiJSON, &doc); err != nil {
		return nil, err
	}
	return &docSchema{doc: doc, pats: map[string]*regexp.Regexp{}}, nil
}

// requestSchema returns the JSON request body schema of method path.
func (d *docSchema) requestSchema(method, path string) (map[string]any, error) {
	op, _ := dig(d.doc, "paths", path, strings.ToLower(method)).(map[string]any)
	if op == nil {
		return nil, fmt.Errorf("no operation %s %s in the document", method, path)
	}
	s, _ := dig(op, "requestBody", "content", "application/json", "schema").(map[string]any)
	if s == nil {
		return nil, fmt.Errorf("%s %s has no JSON request body", method, path)
	}
	return s, nil
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// decodeJSON decodes body the way an API server must read it: one JSON
// value, numbers kept exact. ok is false for anything else.
func decodeJSON(body []byte) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	// Nothing but whitespace may follow the value.
	if _, err := dec.Token(); err == nil {
		return nil, false
	}
	return v, true
}

// check returns nil if v satisfies schema s, else the first violation.
func (d *docSchema) check(s map[string]any, v any, at string) error {
	if ref, ok := s["$ref"].(string); ok {
		name := strings.TrimPrefix(ref, "#/components/schemas/")
		target, _ := dig(d.doc, "components", "schemas", name).(map[string]any)
		if target == nil {
			return fmt.Errorf("%s: unresolvable $ref %s", at, ref)
		}
		return d.check(target, v, at)
	}
	if t, ok := s["type"]; ok {
		var types []string
		switch tt := t.(type) {
		case string:
			types = []string{tt}
		case []any:
			for _, x := range tt {
				if str, ok := x.(string); ok {
					types = append(types, str)
				}
			}
		}
		if !hasType(v, types) {
			return fmt.Errorf("%s: %v is not of type %v", at, v, types)
		}
	}
	if enum, ok := s["enum"].([]any); ok {
		found := false
		for _, e := range enum {
			if jsonEqual(e, v) {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("%s: %v is not one of %v", at, v, enum)
		}
	}
	switch x := v.(type) {
	case string:
		n := utf8.RuneCountInString(x)
		if m, ok := num(s["minLength"]); ok && big.NewFloat(float64(n)).Cmp(m) < 0 {
			return fmt.Errorf("%s: shorter than %v", at, m)
		}
		if m, ok := num(s["maxLength"]); ok && big.NewFloat(float64(n)).Cmp(m) > 0 {
			return fmt.Errorf("%s: longer than %v", at, m)
		}
		if p, ok := s["pattern"].(string); ok {
			re, err := d.pattern(p)
			if err == nil && !re.MatchString(x) {
				return fmt.Errorf("%s: %q does not match %s", at, x, p)
			}
		}
		if f, ok := s["format"].(string); ok && f == "date" {
			if _, err := time.Parse("2006-01-02", x); err != nil {
				return fmt.Errorf("%s: %q is not a date", at, x)
			}
		}
	case json.Number:
		val, ok := new(big.Float).SetString(x.String())
		if !ok {
			return fmt.Errorf("%s: %v is not a number", at, x)
		}
		if m, ok := num(s["minimum"]); ok && val.Cmp(m) < 0 {
			return fmt.Errorf("%s: %v < minimum %v", at, x, m)
		}
		if m, ok := num(s["maximum"]); ok && val.Cmp(m) > 0 {
			return fmt.Errorf("%s: %v > maximum %v", at, x, m)
		}
		if m, ok := num(s["exclusiveMinimum"]); ok && val.Cmp(m) <= 0 {
			return fmt.Errorf("%s: %v <= exclusiveMinimum %v", at, x, m)
		}
		if m, ok := num(s["exclusiveMaximum"]); ok && val.Cmp(m) >= 0 {
			return fmt.Errorf("%s: %v >= exclusiveMaximum %v", at, x, m)
		}
	case []any:
		if m, ok := num(s["minItems"]); ok && big.NewFloat(float64(len(x))).Cmp(m) < 0 {
			return fmt.Errorf("%s: fewer than %v items", at, m)
		}
		if m, ok := num(s["maxItems"]); ok && big.NewFloat(float64(len(x))).Cmp(m) > 0 {
			return fmt.Errorf("%s: more than %v items", at, m)
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, e := range x {
				if err := d.check(items, e, fmt.Sprintf("%s[%d]", at, i)); err != nil {
					return err
				}
			}
		}
	case map[string]any:
		if req, ok := s["required"].([]any); ok {
			for _, r := range req {
				if name, ok := r.(string); ok {
					if _, present := x[name]; !present {
						return fmt.Errorf("%s: %s is required", at, name)
					}
				}
			}
		}
		props, _ := s["properties"].(map[string]any)
		for k, e := range x {
			if ps, ok := props[k].(map[string]any); ok {
				if err := d.check(ps, e, at+"."+k); err != nil {
					return err
				}
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case bool:
				if !ap {
					return fmt.Errorf("%s: unknown property %q", at, k)
				}
			case map[string]any:
				if err := d.check(ap, e, at+"."+k); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (d *docSchema) pattern(p string) (*regexp.Regexp, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if re, ok := d.pats[p]; ok {
		return re, nil
	}
	re, err := regexp.Compile(p)
	if err != nil {
		return nil, err
	}
	d.pats[p] = re
	return re, nil
}

func hasType(v any, types []string) bool {
	if len(types) == 0 {
		return true
	}
	for _, t := range types {
		switch x := v.(type) {
		case nil:
			if t == "null" {
				return true
			}
		case bool:
			if t == "boolean" {
				return true
			}
		case string:
			if t == "string" {
				return true
			}
		case json.Number:
			if t == "number" {
				return true
			}
			if t == "integer" {
				f, ok := new(big.Float).SetString(x.String())
				if ok && f.IsInt() {
					return true
				}
			}
		case []any:
			if t == "array" {
				return true
			}
		case map[string]any:
			if t == "object" {
				return true
			}
		}
	}
	return false
}

// num reads a schema keyword's number (encoding/json gives float64).
func num(v any) (*big.Float, bool) {
	switch x := v.(type) {
	case float64:
		return big.NewFloat(x), true
	case json.Number:
		f, ok := new(big.Float).SetString(x.String())
		return f, ok
	}
	return nil, false
}

func jsonEqual(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}
