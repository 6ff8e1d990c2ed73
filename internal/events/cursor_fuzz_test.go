package events_test

import (
	"encoding/base64"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/events"
	"riverbank/internal/testkit"
)

// FuzzDecodeCursor: decoding a client's `after` never panics; it either
// refuses with validation_failed on field after, or gives a position with
// positive parts that encodes to a cursor decoding to the same position.
func FuzzDecodeCursor(f *testing.F) {
	valid := events.Cursor{TxID: 1234, ID: 99, OccurredAt: time.UnixMicro(1_700_000_000_000_000).UTC()}.Encode()
	raw := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, s := range []string{
		"", valid, valid + "=", valid[:len(valid)-1], raw("e1:1.2.3"), raw("e1:0.2.3"), raw("e1:-1.2.3"), raw("e1:+1.2.3"),
		raw("e1:1.2"), raw("e1:1.2.3.4"), raw("e1:9223372036854775807.9223372036854775807.9223372036854775807"),
		raw("e1:9223372036854775808.1.1"), raw("e0:1.2.3"), raw("e1:1.2.3\x00"), raw("e1:01.002.0003"), "!!!", "e1:1.2.3",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := events.DecodeCursor(s)
		if err != nil {
			de := testkit.RequireCode(t, err, riverbank.EINVALID)
			require.Equal(t, "after", de.Details["field"])
			return
		}
		if s == "" {
			require.True(t, c.IsZero())
			return
		}
		require.Positive(t, c.TxID)
		require.Positive(t, c.ID)
		require.Positive(t, c.OccurredAt.UnixMicro())
		again, err := events.DecodeCursor(c.Encode())
		require.NoError(t, err)
		require.Equal(t, c, again)
	})
}

// FuzzCursorRoundTrip: every position the feed can hand out encodes to a
// cursor that decodes to it.
func FuzzCursorRoundTrip(f *testing.F) {
	f.Add(int64(1), int64(1), int64(1))
	f.Add(int64(math.MaxInt64), int64(math.MaxInt64), int64(math.MaxInt64))
	f.Add(int64(7_000_000), int64(123_456_789), time.Now().UnixMicro())
	f.Fuzz(func(t *testing.T, tx, id, micros int64) {
		if tx <= 0 || id <= 0 || micros <= 0 {
			t.Skip("positions are positive")
		}
		c := events.Cursor{TxID: tx, ID: id, OccurredAt: time.UnixMicro(micros).UTC()}
		got, err := events.DecodeCursor(c.Encode())
		require.NoError(t, err)
		require.Equal(t, c, got)
	})
}
