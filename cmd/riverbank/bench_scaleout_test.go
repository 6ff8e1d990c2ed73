package main

import (
	"bytes"
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/internal/testdb"
)

// TestBenchScaleoutSmoke runs the scale-out scenario briefly on one and two
// server processes (two twice: a repeated count must not replay the first
// one's orders): every order request must succeed, and each count reports
// a row with orders/s, latencies, CPU, transactions and each process's RSS.
func TestBenchScaleoutSmoke(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and starts server processes")
	}
	serialProcessTest(t)
	bin := buildRiverbank(t)
	dsn, _ := testdb.NewDB(t)
	env := func(k string) string {
		if k == "DATABASE_URL" {
			return dsn
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, []string{"bench", "scaleout", "--binary", bin, "--instances", "1,2,2", "--clients", "4", "--duration", "1s",
		"--warmup", "0s", "--skus", "10", "--workers", "4", "--pgbench=false"}, env, &out, &errOut)
	require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	s := out.String()
	require.Contains(t, s, "instances  orders/s", s)
	// One row per count: orders/s > 0, and one peak RSS per process.
	require.Regexp(t, regexp.MustCompile(`(?m)^\s+1\s+[1-9][0-9]*\s+1\.00×\s+-\s.*\s[1-9][0-9]* MiB\s*$`), s)
	require.Regexp(t, regexp.MustCompile(`(?m)^\s+2\s+[1-9][0-9]*\s+[0-9.]+×\s+-\s.*\s[1-9][0-9]* / [1-9][0-9]* MiB\s*$`), s)
	t.Log(s)
}
