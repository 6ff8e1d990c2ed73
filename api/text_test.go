package api

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestScanJSONText: the text rule's scanner finds invalid UTF-8, lone
// surrogate escapes and NUL in any string of a JSON body, keys included,
// names the field as problems do, and lets everything else through —
// valid surrogate pairs, escapes, U+FFFD sent as such, and syntax errors
// (the decoder reports those).
func TestScanJSONText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body string
		field      string // "" when the body passes
		reason     string
	}{
		{"plain object", `{"name": "tea", "n": 1, "ok": true, "x": null}`, "", ""},
		{"surrogate pair", `{"name": "\ud83d\ude00"}`, "", ""},
		{"escapes", `{"name": "a\"b\\c\/d\n\u00e9"}`, "", ""},
		{"replacement character sent as such", `{"name": "\ufffd", "raw": "` + "\uFFFD" + `"}`, "", ""},
		{"multi-byte UTF-8", `{"name": "中文 é 𝄞"}`, "", ""},
		{"syntax error is left to the decoder", `{"name": `, "", ""},
		{"invalid UTF-8", "{\"name\": \"a\xffb\"}", "name", "is not valid UTF-8"},
		{"truncated UTF-8", "{\"name\": \"\xe4\xb8\"}", "name", "is not valid UTF-8"},
		{"UTF-8-encoded surrogate", "{\"name\": \"\xed\xa0\x80\"}", "name", "is not valid UTF-8"},
		{"lone high surrogate", `{"name": "a\ud800"}`, "name", "contains a lone UTF-16 surrogate"},
		{"high surrogate before another escape", `{"name": "\ud800\u0041"}`, "name", "contains a lone UTF-16 surrogate"},
		{"two high surrogates", `{"name": "\ud800\ud800"}`, "name", "contains a lone UTF-16 surrogate"},
		{"lone low surrogate", `{"name": "\udc00"}`, "name", "contains a lone UTF-16 surrogate"},
		{"NUL", `{"name": "a\u0000"}`, "name", "contains a NUL character"},
		{"nested in arrays and objects", `{"items": [{"sku": "ok"}, {"sku": "a\u0000"}]}`, "items[1].sku", "contains a NUL character"},
		{"in an array of strings", `{"event_types": ["order.paid", "\udfff"]}`, "event_types[1]", "contains a lone UTF-16 surrogate"},
		{"in a key", "{\"na\xffme\": 1}", "body", "has a key that is not valid UTF-8"},
		{"in a nested key", `{"a": {"b\u0000": 1}}`, "a", "has a key that contains a NUL character"},
		{"top-level string", `"\u0000"`, "body", "contains a NUL character"},
		{"after a valid string with escapes", `{"a": "x\\", "b": "\ud800"}`, "b", "contains a lone UTF-16 surrogate"},
		{"deep nesting is left to the decoder", strings.Repeat("[", maxScanDepth+10), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := scanJSONText([]byte(tc.body))
			if tc.field == "" {
				require.Nil(t, v)
				return
			}
			require.NotNil(t, v)
			require.Equal(t, tc.field, v.Field)
			require.Equal(t, tc.reason, v.Reason)
			if tc.field == "body" {
				require.Equal(t, "body", v.Location)
			} else {
				require.Equal(t, "body."+tc.field, v.Location)
			}
		})
	}
}

// TestIsJSONContentType mirrors huma's choice of decoder, so the text rule
// scans exactly the bodies huma decodes as JSON.
func TestIsJSONContentType(t *testing.T) {
	t.Parallel()
	for ct, want := range map[string]bool{
		"":                                  true,
		"application/json":                  true,
		"application/json; charset=utf-8":   true,
		"application/merge-patch+json":      true,
		"application/problem+json; q=1":     true,
		"text/plain":                        false,
		"text/json":                         false,
		"application/xml":                   false,
		"multipart/form-data; boundary=x":   false,
		"application/x-www-form-urlencoded": false,
	} {
		require.Equal(t, want, isJSONContentType(ct), ct)
	}
}
