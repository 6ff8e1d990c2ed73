package jsontext

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestScan: the text rule's scanner finds invalid UTF-8, lone surrogate
// escapes and NUL in any string of a JSON document, keys included, names
// the field as problems do, and lets everything else through — valid
// surrogate pairs, escapes, U+FFFD sent as such, and syntax errors (the
// decoder reports those).
func TestScan(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body string
		path       string // "-" when the body passes
		reason     string
	}{
		{"plain object", `{"name": "tea", "n": 1, "ok": true, "x": null}`, "-", ""},
		{"surrogate pair", `{"name": "\ud83d\ude00"}`, "-", ""},
		{"escapes", `{"name": "a\"b\\c\/d\n\u00e9"}`, "-", ""},
		{"replacement character sent as such", `{"name": "\ufffd", "raw": "` + "\uFFFD" + `"}`, "-", ""},
		{"multi-byte UTF-8", `{"name": "中文 é 𝄞"}`, "-", ""},
		{"syntax error is left to the decoder", `{"name": `, "-", ""},
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
		{"in a key", "{\"na\xffme\": 1}", "", "has a key that is not valid UTF-8"},
		{"in a nested key", `{"a": {"b\u0000": 1}}`, "a", "has a key that contains a NUL character"},
		{"top-level string", `"\u0000"`, "", "contains a NUL character"},
		{"after a valid string with escapes", `{"a": "x\\", "b": "\ud800"}`, "b", "contains a lone UTF-16 surrogate"},
		{"escaped and multi-byte keys in the path", `{"k\u00e9y": {"中": ["\u0000"]}}`, "kéy.中[0]", "contains a NUL character"},
		{"deep nesting is left to the decoder", strings.Repeat("[", MaxDepth+10), "-", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := Scan([]byte(tc.body))
			if tc.path == "-" {
				require.Nil(t, v)
				return
			}
			require.NotNil(t, v)
			require.Equal(t, tc.path, v.Path)
			require.Equal(t, tc.reason, v.Reason)
			if tc.path == "" {
				require.Equal(t, "body", v.Field())
			} else {
				require.Equal(t, tc.path, v.Field())
			}
			require.Equal(t, v.Field()+" "+tc.reason+": text must be valid UTF-8 without NUL characters or lone surrogates", v.Detail())
		})
	}
}

// TestScanExcept: the elements of the top-level object's items array are
// read past without being checked; everything around them is checked as
// Scan checks it, including what follows them.
func TestScanExcept(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body string
		path       string // "-" when the body passes
		reason     string
	}{
		{"a bad item string", `{"items": [{"sku": "ok"}, {"sku": "a\u0000"}], "key": "k"}`, "-", ""},
		{"a bad item key", "{\"items\": [{\"s\xffku\": 1}, {\"a\": {\"b\\ud800\": [\"\\u0000\"]}}]}", "-", ""},
		{"a bad item that is a string", `{"items": ["\ud800", 1, null, [ "\u0000" ]]}`, "-", ""},
		{"envelope field after the items", "{\"items\": [{\"sku\": \"a\\u0000\"}], \"key\": \"a\xffb\"}", "key", "is not valid UTF-8"},
		{"envelope field before the items", `{"key": "\udc00", "items": [{}]}`, "key", "contains a lone UTF-16 surrogate"},
		{"items not an array", `{"items": "\u0000"}`, "items", "contains a NUL character"},
		{"items an object", `{"items": {"sku": "\u0000"}}`, "items.sku", "contains a NUL character"},
		{"items as a bad key", `{"it\u0000ems": []}`, "", "has a key that contains a NUL character"},
		{"items spelled with an escape", `{"\u0069tems": ["\u0000"], "x": "\u0000"}`, "x", "contains a NUL character"},
		{"items deeper down is not the batch's", `{"a": {"items": ["\u0000"]}}`, "a.items[0]", "contains a NUL character"},
		{"a second items array", `{"items": [{}], "items": ["\u0000"]}`, "-", ""},
		{"a syntax error inside an item ends the scan", `{"items": [{"a" 1}], "key": "\u0000"}`, "-", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := ScanExcept([]byte(tc.body), "items")
			if tc.path == "-" {
				require.Nil(t, v)
			} else {
				require.NotNil(t, v)
				require.Equal(t, tc.path, v.Path)
				require.Equal(t, tc.reason, v.Reason)
			}
		})
	}
	// Without a key, ScanExcept is Scan.
	body := []byte(`{"items": [{"sku": "\u0000"}]}`)
	require.Equal(t, Scan(body), ScanExcept(body, ""))
	require.Equal(t, "items[0].sku", Scan(body).Path)
}

// TestReason: decoded text (a path or query parameter).
func TestReason(t *testing.T) {
	t.Parallel()
	require.Empty(t, Reason("é中 \ufffd"))
	require.Equal(t, "is not valid UTF-8", Reason("a\xff"))
	require.Equal(t, "contains a NUL character", Reason("a\x00"))
}

// FuzzScan: the scanner never panics, and on a document Go's decoder
// accepts it finds a violation exactly when the document's strings, as
// sent, are not valid text: a document without one decodes to the same
// value after a re-encoding round trip (nothing was turned into U+FFFD).
func FuzzScan(f *testing.F) {
	for _, s := range []string{`{"a": "b"}`, `{"a": ["\ud800"]}`, "{\"a\": \"\xff\"}", `{"items": [{"a": "\u0000"}]}`, `"\ud83d\ude00"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v := Scan(data)
		ScanExcept(data, "items")
		var x any
		if json.Unmarshal(data, &x) != nil {
			return
		}
		if v != nil || strings.Contains(string(data), `\ufffd`) || strings.Contains(string(data), "\uFFFD") {
			return
		}
		require.NotContains(t, mustMarshal(t, x), "\uFFFD", "no violation found in %q, yet decoding made U+FFFD", data)
	})
}

func mustMarshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}
