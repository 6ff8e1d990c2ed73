package api_test

// Hostile input for the contract test (contract_test.go), generated from
// an operation's schema in the published document and a valid request:
// every body field replaced by values of the wrong type, out of range,
// overflowing, empty, huge or holding text the API must refuse; required
// fields removed, unknown ones added; bodies that are not JSON, too large,
// or of another content type; parameters likewise; and missing or wrong
// credentials.

import (
	"bytes"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
)

// rawJSON is written verbatim by encodeJSON: the JSON no Go value
// marshals to (invalid UTF-8, lone surrogate escapes, numbers past int64
// or float64, duplicate keys).
type rawJSON string

// encodeJSON writes v as JSON with object keys sorted, so requests are
// reproducible. It knows the types a request body is built from.
func encodeJSON(v any) []byte {
	var b bytes.Buffer
	writeJSON(&b, v)
	return b.Bytes()
}

func writeJSON(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case rawJSON:
		b.WriteString(string(x))
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case int:
		b.WriteString(strconv.Itoa(x))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case float64:
		b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
	case string:
		b.WriteString(jsonString(x))
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSON(b, e)
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(jsonString(k))
			b.WriteByte(':')
			writeJSON(b, x[k])
		}
		b.WriteByte('}')
	default:
		panic(fmt.Sprintf("encodeJSON: unsupported %T", v))
	}
}

// jsonString quotes s as a JSON string (strconv.Quote is not JSON for
// control characters).
func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// step is one step of a path into a JSON value: an object key or an array
// index.
type step struct {
	key   string
	index int // when key == ""
}

type jsonPath []step

// field names a path as the API's problems do: items[0].sku.
func (p jsonPath) field() string {
	var b strings.Builder
	for _, s := range p {
		if s.key == "" {
			fmt.Fprintf(&b, "[%d]", s.index)
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.key)
	}
	return b.String()
}

func (p jsonPath) with(s step) jsonPath { return append(slices.Clip(p), s) }

// replaceAt returns a copy of v with the value at path set to nv (or the
// key removed when remove is set).
func replaceAt(v any, path jsonPath, nv any, remove bool) any {
	if len(path) == 0 {
		return nv
	}
	s := path[0]
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = e
		}
		if len(path) == 1 && remove {
			delete(out, s.key)
			return out
		}
		out[s.key] = replaceAt(x[s.key], path[1:], nv, remove)
		return out
	case []any:
		out := slices.Clone(x)
		out[s.index] = replaceAt(x[s.index], path[1:], nv, remove)
		return out
	}
	panic(fmt.Sprintf("replaceAt: %T at %s", v, path.field()))
}

// normalize turns a request body built from Go literals into the types
// encodeJSON and the mutator walk: []map[string]any into []any, and so on.
func normalize(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = normalize(e)
		}
		return out
	case []map[string]any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = normalize(e)
		}
		return out
	case []string:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = e
		}
		return out
	}
	return v
}

// bodyCase is one hostile body.
type bodyCase struct {
	name string
	body any
	// textField, when set, is the field whose text breaks the text rule:
	// the answer must be 422 validation_failed naming it.
	textField string
}

// textBreakers are JSON strings the text rule refuses, by name.
var textBreakers = []struct{ name, json string }{
	{"invalid UTF-8 byte", "\"a\xffb\""},
	{"truncated UTF-8 sequence", "\"a\xe4\xb8\""},
	{"overlong UTF-8", "\"\xc0\xaf\""},
	{"UTF-8-encoded surrogate", "\"\xed\xa0\x80\""},
	{"lone high surrogate", `"a\ud800b"`},
	{"lone high surrogate at the end", `"ab\ud83d"`},
	{"lone low surrogate", `"\udc00"`},
	{"high surrogate before a non-surrogate", `"\ud800\u0041"`},
	{"NUL escape", `"a\u0000b"`},
	{"NUL alone", `"\u0000"`},
}

// stringValues are strings of valid text that stress a field: empty,
// blank, long, multi-byte, markup, control characters, injections.
func stringValues(s *openapi3.Schema) []bodyValue {
	out := []bodyValue{
		{"empty string", ""},
		{"blank", "   "},
		{"multi-byte text", "é中𝄞☃"},
		{"replacement character", "\ufffd"},
		{"control characters", "a\tb\nc\rd\x01"},
		{"right-to-left override", "abc\u202edef"},
		{"markup", "<script>alert(1)</script>"},
		{"quote injection", "' OR '1'='1"},
		{"path traversal", "../../etc/passwd"},
		{"format verbs", "%s%n%x%d"},
		{"long string (100,000)", strings.Repeat("x", 100_000)},
		{"long multi-byte string (300 runes)", strings.Repeat("長", 300)},
	}
	if s != nil && s.MaxLength != nil {
		out = append(out, bodyValue{"one over maxLength", strings.Repeat("a", int(*s.MaxLength)+1)},
			bodyValue{"maxLength multi-byte runes", strings.Repeat("é", int(*s.MaxLength))})
	}
	if s != nil && s.Format == "date" {
		for _, d := range []string{"2024-02-30", "2024-13-01", "0000-01-01", "9999-12-31", "2024-1-1", "20240101", "2024-07-01T00:00:00Z", "1969-12-31", "+2024-07-01"} {
			out = append(out, bodyValue{"date " + d, d})
		}
	}
	return out
}

type bodyValue struct {
	name  string
	value any
}

// numberValues are integers at and past every boundary a field can have.
func numberValues(s *openapi3.Schema) []bodyValue {
	out := []bodyValue{
		{"zero", 0}, {"minus one", -1}, {"one", 1},
		{"int64 max", rawJSON(strconv.FormatInt(math.MaxInt64, 10))},
		{"int64 max + 1", rawJSON("9223372036854775808")},
		{"int64 min", rawJSON(strconv.FormatInt(math.MinInt64, 10))},
		{"int64 min - 1", rawJSON("-9223372036854775809")},
		{"huge integer", rawJSON("123456789012345678901234567890")},
		{"2^53 + 1", rawJSON("9007199254740993")},
		{"fraction", rawJSON("1.5")},
		{"integral float", rawJSON("1.0")},
		{"exponent", rawJSON("1e3")},
		{"float64 overflow", rawJSON("1e400")},
		{"tiny float", rawJSON("1e-400")},
		{"negative zero", rawJSON("-0")},
		{"max float64", rawJSON("1.7976931348623157e308")},
	}
	if s != nil && s.Min != nil {
		out = append(out, bodyValue{"minimum - 1", int64(*s.Min) - 1}, bodyValue{"minimum", int64(*s.Min)})
	}
	if s != nil && s.Max != nil && *s.Max < math.MaxInt64 {
		out = append(out, bodyValue{"maximum + 1", int64(*s.Max) + 1}, bodyValue{"maximum", int64(*s.Max)})
	}
	return out
}

// wrongTypes are values of every JSON type but the field's own.
func wrongTypes(kind string) []bodyValue {
	all := map[string]bodyValue{
		"string":  {"a string", "12"},
		"integer": {"a number", 12},
		"boolean": {"a boolean", true},
		"array":   {"an array", []any{}},
		"object":  {"an object", map[string]any{}},
	}
	out := []bodyValue{{"null", nil}}
	for _, k := range []string{"string", "integer", "boolean", "array", "object"} {
		if k == kind || (kind == "number" && k == "integer") {
			continue
		}
		out = append(out, all[k])
	}
	return out
}

// schemaKind is the JSON type a schema stands for ("" when it allows any).
func schemaKind(s *openapi3.Schema) string {
	if s == nil || s.Type == nil {
		return ""
	}
	for _, t := range s.Type.Slice() {
		if t != "null" {
			return t
		}
	}
	return ""
}

// valueKind is the JSON type of a value.
func valueKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int, int64, float64:
		return "integer"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return ""
}

// bodyCases generates the hostile bodies for an operation from its valid
// body and the schema of its request body.
func bodyCases(valid any, schema *openapi3.Schema) []bodyCase {
	var out []bodyCase
	var walk func(path jsonPath, v any, s *openapi3.Schema)
	walk = func(path jsonPath, v any, s *openapi3.Schema) {
		name := path.field()
		if name == "" {
			name = "body"
		}
		put := func(what string, nv any) {
			out = append(out, bodyCase{name: name + ": " + what, body: replaceAt(valid, path, nv, false)})
		}
		kind := schemaKind(s)
		if kind == "" {
			kind = valueKind(v)
		}
		for _, w := range wrongTypes(kind) {
			put(w.name, w.value)
		}
		switch kind {
		case "string":
			for _, tb := range textBreakers {
				out = append(out, bodyCase{name: name + ": " + tb.name, body: replaceAt(valid, path, rawJSON(tb.json), false), textField: path.field()})
			}
			for _, sv := range stringValues(s) {
				put(sv.name, sv.value)
			}
			if s != nil && len(s.Enum) > 0 {
				put("not in the enum", "NOT_A_VALUE")
				if e, ok := s.Enum[0].(string); ok {
					put("enum value in lower case", strings.ToLower(e))
				}
			}
		case "integer", "number":
			for _, nv := range numberValues(s) {
				put(nv.name, nv.value)
			}
		case "boolean":
			put("the string true", "true")
			put("one", 1)
		case "array":
			arr, _ := v.([]any)
			put("empty array", []any{})
			put("array of null", []any{nil})
			if len(arr) > 0 {
				put("first element twice", append(slices.Clone(arr), arr[0]))
				if s != nil && s.MaxItems != nil && *s.MaxItems < 20_000 {
					big := make([]any, int(*s.MaxItems)+1)
					for i := range big {
						big[i] = arr[0]
					}
					put("one over maxItems", big)
				}
				var items *openapi3.Schema
				if s != nil && s.Items != nil {
					items = s.Items.Value
				}
				walk(path.with(step{index: 0}), arr[0], items)
			}
		case "object":
			obj, _ := v.(map[string]any)
			put("unknown field", withKey(obj, "zz_unknown", 1))
			put("prototype key", withKey(obj, "__proto__", map[string]any{"admin": true}))
			keys := make([]string, 0, len(obj))
			for k := range obj {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				out = append(out, bodyCase{name: name + ": without " + k, body: replaceAt(valid, path.with(step{key: k}), nil, true)})
				if strings.ToUpper(k) != k {
					// Field names are exact: Go's decoder would take it.
					renamed := withKey(obj, strings.ToUpper(k), obj[k])
					delete(renamed, k)
					put("key "+k+" in upper case", renamed)
				}
				if len(path) == 0 {
					// A duplicate key: the last one wins in Go's decoder.
					dup := rawJSON(strings.TrimSuffix(string(encodeJSON(obj)), "}") + "," + jsonString(k) + ":" + string(encodeJSON(obj[k])) + "}")
					out = append(out, bodyCase{name: name + ": duplicate " + k, body: dup})
				}
				var ps *openapi3.Schema
				if s != nil && s.Properties[k] != nil {
					ps = s.Properties[k].Value
				}
				walk(path.with(step{key: k}), obj[k], ps)
			}
		}
	}
	walk(nil, valid, schema)
	return out
}

func withKey(obj map[string]any, k string, v any) map[string]any {
	out := make(map[string]any, len(obj)+1)
	for kk, vv := range obj {
		out[kk] = vv
	}
	out[k] = v
	return out
}

// malformedBodies are bodies that are not the JSON object an operation
// takes.
var malformedBodies = []struct{ name, body string }{
	{"empty body", ""},
	{"whitespace", "  \n"},
	{"open brace", "{"},
	{"unterminated string", `{"a": "b`},
	{"missing value", `{"a":}`},
	{"trailing comma", `{"a": 1,}`},
	{"two documents", `{}{}`},
	{"null", "null"},
	{"array", "[]"},
	{"string", `"x"`},
	{"number", "123"},
	{"single quotes", `{'a': 1}`},
	{"comment", `{/* c */}`},
	{"byte order mark", "\xef\xbb\xbf{}"},
	{"UTF-16", "\xff\xfe{\x00}\x00"},
	{"invalid UTF-8 outside strings", "{\xff}"},
	{"NUL byte", "{\x00}"},
	{"deep nesting", strings.Repeat("[", 100_000)},
	{"deep nesting closed", strings.Repeat(`{"a":`, 20_000) + "1" + strings.Repeat("}", 20_000)},
}

// paramValues are hostile values of a path or query parameter, already
// escaped for a URL. Those in textParamBreakers break the text rule.
var paramValues = []struct{ name, raw string }{
	{"empty", ""},
	{"zero", "0"},
	{"minus one", "-1"},
	{"letters", "abc"},
	{"fraction", "1.5"},
	{"int64 max", "9223372036854775807"},
	{"int64 max + 1", "9223372036854775808"},
	{"huge number", "123456789012345678901234567890"},
	{"exponent", "1e3"},
	{"hex", "0x10"},
	{"space", "%20"},
	{"plus sign", "+0"},
	{"escaped slash", "a%2Fb"},
	{"multi-byte", "%E4%B8%AD%E6%96%87"},
	{"long (5,000)", strings.Repeat("9", 5000)},
	{"quote injection", "%27%20OR%20%271%27%3D%271"},
	{"date-like", "2024-02-30"},
	{"lower-case enum-like", "created"},
	{"base64 garbage", "djE6eHh4"},
}

var textParamBreakers = []struct{ name, raw string }{
	{"NUL", "a%00b"},
	{"invalid UTF-8", "a%FFb"},
	{"UTF-8-encoded surrogate", "%ED%A0%80"},
	{"overlong UTF-8", "%C0%AF"},
}
