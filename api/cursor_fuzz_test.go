package api

import (
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/events"
)

func requireInvalid(t *testing.T, err error) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, riverbank.EINVALID, riverbank.ErrorCode(err), "%v", err)
}

// FuzzDecodeListCursor: a list cursor from a client decodes to a storable
// key that encodes back to a cursor of the same key, or is refused with
// validation_failed; an id cursor decodes only to a positive id. Any
// storable key survives encode then decode.
func FuzzDecodeListCursor(f *testing.F) {
	for _, s := range []string{"", encodeCursor("cash:eu|EUR"), encodeIDCursor(1), encodeIDCursor(9_223_372_036_854_775_807), encodeCursor("0"),
		encodeCursor("-5"), encodeCursor("1e3"), encodeCursor("\x00"), encodeCursor("\xff"), "djE6", "v1:5", "!!", "djE6MQ==", "djE6MQ"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		key, err := decodeCursor(s)
		if err != nil {
			requireInvalid(t, err)
		} else {
			require.True(t, riverbank.ValidText(key))
			again, err := decodeCursor(encodeCursor(key))
			require.NoError(t, err)
			require.Equal(t, key, again)
		}
		if id, err := decodeIDCursor(s); err != nil {
			requireInvalid(t, err)
		} else {
			require.Positive(t, id)
			again, err := decodeIDCursor(encodeIDCursor(id))
			require.NoError(t, err)
			require.Equal(t, id, again)
		}
		if riverbank.ValidText(s) {
			got, err := decodeCursor(encodeCursor(s))
			require.NoError(t, err)
			require.Equal(t, s, got)
		}
	})
}

// FuzzParseWait: the long-poll wait is 0..30 s or validation_failed, and
// a whole number of seconds means that many seconds.
func FuzzParseWait(f *testing.F) {
	// testdata/fuzz/FuzzParseWait holds the input that found the int64
	// wrap-around.
	for _, s := range []string{"", "0", "25", "30", "31", "30s", "30.000000001s", "500ms", "-1", "-1s", "1h", "9223372036854775807", "1e3", "0x10", " 5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseWait(s)
		if err != nil {
			requireInvalid(t, err)
			return
		}
		require.GreaterOrEqual(t, d, time.Duration(0))
		require.LessOrEqual(t, d, events.MaxWait)
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			require.Equal(t, time.Duration(n)*time.Second, d, "%q seconds", s)
			require.LessOrEqual(t, n, int64(30))
		}
	})
}
