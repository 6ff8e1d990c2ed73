package lending_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/lending"
	"riverbank/internal/testkit"
)

// FuzzParseDate: the business-date parser never panics, accepts only
// canonical YYYY-MM-DD dates of years 1900..9999 (formatting what it
// parsed gives the input back: no other spelling of a date gets in), and
// refuses everything else with validation_failed naming the field.
func FuzzParseDate(f *testing.F) {
	for _, s := range []string{
		"2024-02-29", "2023-02-29", "2026-12-31", "1900-01-01", "1899-12-31", "9999-12-31", "10000-01-01", "0000-01-01",
		"2024-1-05", "2024-01-5", "24-01-05", "2024/01/05", "2024-01-05T00:00:00Z", " 2024-01-05", "2024-01-05 ", "+2024-01-05",
		"-2024-01-05", "2024-13-01", "2024-00-10", "2024-04-31", "２０２４-01-01", "2024-01-0\x00", "", "\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := lending.ParseDate("value_date", s)
		if err != nil {
			de := testkit.RequireCode(t, err, riverbank.EINVALID)
			require.Equal(t, "value_date", de.Details["field"])
			require.True(t, d.IsZero())
			return
		}
		require.Equal(t, s, d.Format(lending.DateLayout), "parse then format gives the input back")
		require.Equal(t, time.UTC, d.Location())
		require.True(t, d.Equal(d.Truncate(24*time.Hour)), "midnight: %v", d)
		require.GreaterOrEqual(t, d.Year(), 1900)
		require.LessOrEqual(t, d.Year(), 9999)
	})
}

// TestParseDateRoundTrip: every day of 1900..2300 and of the last years
// allowed formats and parses back to itself.
func TestParseDateRoundTrip(t *testing.T) {
	t.Parallel()
	check := func(from, to time.Time) {
		for d := from; !d.After(to); d = d.AddDate(0, 0, 1) {
			got, err := lending.ParseDate("d", d.Format(lending.DateLayout))
			if err != nil || !got.Equal(d) {
				t.Fatalf("%s: got %v, %v", d.Format(lending.DateLayout), got, err)
			}
		}
	}
	check(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2300, 12, 31, 0, 0, 0, 0, time.UTC))
	check(time.Date(9990, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC))
}
