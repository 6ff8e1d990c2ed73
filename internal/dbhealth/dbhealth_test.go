package dbhealth_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"riverbank/internal/dbhealth"
	"riverbank/internal/pgcluster"
)

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

// records returns the JSON log records written so far.
func (s *syncBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for line := range strings.SplitSeq(s.buf.String(), "\n") {
		if line == "" {
			continue
		}
		var r map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &r), line)
		out = append(out, r)
	}
	return out
}

func count(recs []map[string]any, msg string) int {
	n := 0
	for _, r := range recs {
		if r["msg"] == msg {
			n++
		}
	}
	return n
}

func find(recs []map[string]any, msg string) map[string]any {
	for _, r := range recs {
		if r["msg"] == msg {
			return r
		}
	}
	return nil
}

type testBundle struct {
	cluster *pgcluster.Cluster
	out     *syncBuffer
	mon     *dbhealth.Monitor
	log     *slog.Logger
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	if _, err := pgcluster.FindBinaries(); err != nil {
		t.Skipf("needs local Postgres server binaries to stop and start a private cluster: %v", err)
	}
	ctx := context.Background()
	c, err := pgcluster.Start(ctx, pgcluster.Options{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	cfg, err := pgx.ParseConfig(c.URL)
	require.NoError(t, err)
	out := &syncBuffer{}
	base := slog.New(slog.NewJSONHandler(out, nil))
	mon := dbhealth.New(cfg, base.With("component", "dbhealth"), dbhealth.Options{Interval: 50 * time.Millisecond, ReportEvery: 300 * time.Millisecond})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		mon.Run(runCtx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &testBundle{cluster: c, out: out, mon: mon, log: slog.New(mon.Handler(base.Handler()))}
}

func TestMonitorOutage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	someErr := errors.New("fetch jobs: connection refused")

	// Up: nothing is held back.
	for range 5 {
		b.log.Warn("a warning while up", "error", errors.New("not a database error"))
	}
	require.Equal(t, 5, count(b.out.records(t), "a warning while up"))
	require.True(t, b.mon.Up())

	require.NoError(t, b.cluster.StopServer(ctx))
	require.Eventually(t, func() bool { return !b.mon.Up() }, 10*time.Second, 10*time.Millisecond, "the monitor notices the outage")
	for range 100 {
		b.log.Warn("a repeated failure", "err", someErr.Error())
	}
	b.log.Error("another failure")
	b.log.Error("another failure")
	b.log.Info("a status line")
	recs := b.out.records(t)
	require.Equal(t, 1, count(recs, "a repeated failure"), "each distinct line passes once while down")
	require.Equal(t, 1, count(recs, "another failure"))
	require.Equal(t, 1, count(recs, "a status line"))
	down := find(recs, "database unreachable: API calls answer 503 database_unavailable, jobs wait, and everything resumes by itself when it is back; repeated log lines are held back meanwhile")
	require.NotNil(t, down, "the outage is logged when it begins")
	require.Equal(t, "ERROR", down["level"])
	require.Equal(t, "dbhealth", down["component"])
	require.NotEmpty(t, down["error"])

	var still map[string]any
	require.Eventually(t, func() bool {
		for _, r := range b.out.records(t) {
			if r["msg"] == "database still unreachable" && r["log_lines_held_back"] == 100.0 {
				still = r
				return true
			}
		}
		return false
	}, 10*time.Second, 10*time.Millisecond, "a continuing outage is logged every ReportEvery, with what it held back")
	require.Contains(t, still["held_back_by_message"], "99× WARN a repeated failure; 1× ERROR another failure")
	require.NotEmpty(t, still["down_for"])

	require.NoError(t, b.cluster.StartServer(ctx))
	require.Eventually(t, b.mon.Up, 10*time.Second, 10*time.Millisecond, "the monitor notices the recovery")
	back := find(b.out.records(t), "database reachable again; work resumes")
	require.NotNil(t, back, "the recovery is logged")
	require.Equal(t, "WARN", back["level"], "warn, so that RIVERBANK_LOG_LEVEL=warn shows it")
	require.EqualValues(t, 100, back["log_lines_held_back"])
	require.NotEmpty(t, back["down_for"])
	require.Greater(t, back["failed_probes"], 0.0)
	require.EqualValues(t, 1, b.mon.Outages())
	require.EqualValues(t, 100, b.mon.Suppressed())

	// Up again: repeats pass again.
	b.log.Warn("a repeated failure")
	require.Equal(t, 2, count(b.out.records(t), "a repeated failure"))

	reg := prometheus.NewRegistry()
	reg.MustRegister(b.mon.Collector())
	families, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]float64{}
	for _, f := range families {
		m := f.GetMetric()[0]
		if m.GetGauge() != nil {
			got[f.GetName()] = m.GetGauge().GetValue()
		} else {
			got[f.GetName()] = m.GetCounter().GetValue()
		}
	}
	require.Equal(t, map[string]float64{
		"riverbank_database_up":               1,
		"riverbank_database_outages_total":    1,
		"riverbank_log_lines_held_back_total": 100,
	}, got)
}

// A logged warning that carries a connection failure marks the database
// down at once (repeats are held back from the first failure, not from the
// next probe); the next probe finds it up again.
func TestMonitorReportedFailure(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	_, connErr := pgx.Connect(context.Background(), "postgres://postgres@"+addr+"/x?sslmode=disable&connect_timeout=5")
	require.Error(t, connErr)

	// A deadline is not evidence of an outage (a saturated database
	// causes it too): it only asks for a probe.
	b.log.Warn("request failed", "error", context.DeadlineExceeded)
	require.True(t, b.mon.Up())

	b.log.Warn("request failed", "error", connErr)
	recs := b.out.records(t)
	require.Equal(t, 2, count(recs, "request failed"))
	require.NotNil(t, find(recs, "database unreachable: API calls answer 503 database_unavailable, jobs wait, and everything resumes by itself when it is back; repeated log lines are held back meanwhile"))
	require.Eventually(t, b.mon.Up, 10*time.Second, 10*time.Millisecond, "the probe finds the database up")
	require.NotNil(t, find(b.out.records(t), "database reachable again; work resumes"))
	require.EqualValues(t, 1, b.mon.Outages())
}

// Only a session opened after the outage began ends it: here new sessions
// are refused (the role may not log in) while the monitor's old one still
// answers, as during a shutdown that has not reached it yet.
func TestMonitorRecoveryNeedsNewSession(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, b.cluster.URL)
	require.NoError(t, err)
	defer admin.Close(ctx)
	require.Eventually(t, func() bool {
		var n int
		err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'riverbank-dbhealth'").Scan(&n)
		return err == nil && n == 1
	}, 10*time.Second, 10*time.Millisecond, "the monitor holds its session")

	_, err = admin.Exec(ctx, "ALTER ROLE postgres NOLOGIN")
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "ALTER ROLE postgres LOGIN") })
	_, connErr := pgx.Connect(ctx, b.cluster.URL)
	require.Error(t, connErr)
	b.log.Error("fetch failed", "error", connErr)
	require.False(t, b.mon.Up())
	time.Sleep(500 * time.Millisecond) // ten probe intervals
	require.False(t, b.mon.Up(), "the old session's answer does not end the outage")

	_, err = admin.Exec(ctx, "ALTER ROLE postgres LOGIN")
	require.NoError(t, err)
	require.Eventually(t, b.mon.Up, 10*time.Second, 10*time.Millisecond)
	require.EqualValues(t, 1, b.mon.Outages())
}
