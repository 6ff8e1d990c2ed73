package api

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestScanJSONText: the text rule's body scan (internal/jsontext, whose
// tests cover what the scanner finds) names a body field as huma names
// locations, "body" for the body itself, and leaves the elements of the
// items array an operation names to its handler.
func TestScanJSONText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body, items string
		field, location   string // "" when the body passes
		reason            string
	}{
		{"plain object", `{"name": "tea"}`, "", "", "", ""},
		{"nested field", `{"items": [{"sku": "ok"}, {"sku": "a\u0000"}]}`, "", "items[1].sku", "body.items[1].sku", "contains a NUL character"},
		{"in a top-level key", "{\"na\xffme\": 1}", "", "body", "body", "has a key that is not valid UTF-8"},
		{"top-level string", `"\ud800"`, "", "body", "body", "contains a lone UTF-16 surrogate"},
		{"in an item left to the handler", `{"items": [{"sku": "a\u0000"}]}`, "items", "", "", ""},
		{"envelope beside such items", `{"items": [{"sku": "a\u0000"}], "idempotency_key": "\udc00"}`, "items", "idempotency_key", "body.idempotency_key", "contains a lone UTF-16 surrogate"},
		{"deep nesting is left to the decoder", strings.Repeat("[", 20000), "", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := scanJSONText([]byte(tc.body), tc.items)
			if tc.field == "" {
				require.Nil(t, v)
				return
			}
			require.NotNil(t, v)
			require.Equal(t, tc.field, v.Field)
			require.Equal(t, tc.location, v.Location)
			require.Equal(t, tc.reason, v.Reason)
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
