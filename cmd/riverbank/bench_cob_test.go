package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/internal/testdb"
)

// TestBenchCOBAndCasesSmoke runs both scenarios on a few hundred loans: the
// seed must satisfy the trial balance (sub-ledger included), a month
// rollover must write the accrual history, and every overdue loan must end
// in its borrower's one OPEN case.
func TestBenchCOBAndCasesSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("creates databases")
	}
	t.Parallel()
	serverURL := testdb.ServerURL(t)
	env := func(k string) string {
		if k == "DATABASE_URL" {
			return serverURL
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	var out, errOut bytes.Buffer
	err := run(ctx, []string{"bench", "cob", "--loans", "600", "--borrowers", "150", "--date", "2025-01-28", "--dates", "5",
		"--chunk-size", "100", "--workers", "4", "--year-sample", "50", "--checkpoint=false"}, env, &out, &errOut)
	require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	s := out.String()
	require.Equal(t, 5*2, strings.Count(s, "balanced=true"), s) // per date and in the summary
	require.NotContains(t, s, "balanced=false", s)
	require.Contains(t, s, "loans turned overdue", s)
	require.Contains(t, s, "loan_accrual_month after the rollover: 600 rows", s)
	require.Contains(t, s, "per loan-year", s)

	out.Reset()
	errOut.Reset()
	for _, mode := range []string{"cob", "direct"} {
		err = run(ctx, []string{"bench", "cases", "--loans", "400", "--borrowers", "100", "--mode", mode,
			"--chunk-size", "100", "--workers", "4"}, env, &out, &errOut)
		require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
		require.Contains(t, out.String(), "duplicate OPEN cases: 0; borrowers without exactly one OPEN case: 0", out.String())
		require.Contains(t, out.String(), "invariants hold: true", out.String())
	}
}
