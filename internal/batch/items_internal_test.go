package batch

import (
	"testing"

	"github.com/stretchr/testify/require"

	"riverbank"
)

// TestDecodeItemKeysAreExact: an item's property names must be exactly
// the endpoint's, as the API's schema validation requires (api/input.go);
// encoding/json alone would match them case-insensitively.
func TestDecodeItemKeysAreExact(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, payload, badField string
	}{
		{"Exact", `{"idempotency_key":"k","postings":[{"account":"a","amount_minor":1},{"account":"b","amount_minor":-1}]}`, ""},
		{"UpperCaseKey", `{"IDEMPOTENCY_KEY":"k","postings":[]}`, "IDEMPOTENCY_KEY"},
		{"CaseTwinOverridesTheKey", `{"idempotency_key":"k","Idempotency_Key":"other","postings":[]}`, "Idempotency_Key"},
		{"NestedKey", `{"idempotency_key":"k","postings":[{"Account":"a","amount_minor":1}]}`, "postings.Account"},
		{"UnknownKey", `{"idempotency_key":"k","memo":"x"}`, "memo"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var it entryItem
			err := decodeItem([]byte(tt.payload), &it)
			if tt.badField == "" {
				require.NoError(t, err)
				require.Equal(t, "k", it.IdempotencyKey)
				return
			}
			de := requireInvalid(t, err)
			require.Equal(t, tt.badField, de.Details["field"])
			require.Contains(t, de.Message, tt.badField)
		})
	}
	// What is not JSON is the decoder's to refuse.
	var it entryItem
	requireInvalid(t, decodeItem([]byte(`{"idempotency_key":`), &it))
}

func requireInvalid(t *testing.T, err error) *riverbank.Error {
	t.Helper()
	require.Error(t, err)
	de, ok := err.(*riverbank.Error)
	require.True(t, ok, "%T: %v", err, err)
	require.Equal(t, riverbank.EINVALID, de.Code)
	return de
}
