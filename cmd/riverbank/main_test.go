package main

// End-to-end tests: the real program, run in-process through run() with its
// environment, arguments and output streams passed in, against real
// Postgres, listening on 127.0.0.1:0 and talking HTTP.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/testdb"
)

func TestMain(m *testing.M) {
	code := testdb.Run(m)
	removeBuiltRiverbank()
	os.Exit(code)
}

const (
	testToken  = "e2e-token-0123456789abcdef"
	otherToken = "e2e-other-token-0123456789"
	// shutdownTimeout is RIVERBANK_SHUTDOWN_TIMEOUT in these tests.
	shutdownTimeout = 5 * time.Second
)

// syncBuffer is an io.Writer that the program's goroutines and the test may
// use at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// process is one run() call in a goroutine.
type process struct {
	stdout, stderr *syncBuffer
	cancel         context.CancelFunc
	exited         chan struct{} // closed when run returned
	err            error         // run's result, valid once exited is closed
}

// start runs the program with args and env (nothing is read from the real
// environment) until the test ends or stop is called.
func start(t *testing.T, args []string, env map[string]string) *process {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &process{stdout: &syncBuffer{}, stderr: &syncBuffer{}, cancel: cancel, exited: make(chan struct{})}
	go func() {
		defer close(p.exited)
		p.err = runRecover(ctx, args, env, p.stdout, p.stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.exited:
		case <-time.After(shutdownTimeout + 20*time.Second):
			t.Errorf("riverbank %s did not stop; stderr:\n%s", args[0], p.stderr)
		}
	})
	return p
}

// stop cancels the program's context, as SIGTERM does, and returns run's
// result and how long it took to return.
func (p *process) stop(t *testing.T) (time.Duration, error) {
	t.Helper()
	begin := time.Now()
	p.cancel()
	select {
	case <-p.exited:
		return time.Since(begin), p.err
	case <-time.After(shutdownTimeout + 20*time.Second):
		t.Fatalf("run did not return after cancel; stderr:\n%s", p.stderr)
		return 0, nil
	}
}

// waitServing waits for the `riverbank serving` log line and returns the
// address it names. It fails the test at once if the program exits instead.
func (p *process) waitServing(t *testing.T) string {
	t.Helper()
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		for line := range strings.SplitSeq(p.stderr.String(), "\n") {
			var rec struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "riverbank serving" {
				require.NotEmpty(t, rec.Addr, "serving line names the address: %s", line)
				return rec.Addr
			}
		}
		select {
		case <-p.exited:
			t.Fatalf("riverbank exited before serving: %v\nstderr:\n%s", p.err, p.stderr)
		case <-deadline:
			t.Fatalf("riverbank did not log `riverbank serving` within 60s; stderr:\n%s", p.stderr)
		case <-tick.C:
		}
	}
}

// runRecover is run with a panic turned into an error, so a program that
// panics while starting fails its test instead of the whole test binary.
func runRecover(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("riverbank %s panicked: %v\n%s", strings.Join(args, " "), v, debug.Stack())
		}
	}()
	return run(ctx, args, mapEnv(env), stdout, stderr)
}

func mapEnv(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// runToEnd runs a command that is expected to finish by itself.
func runToEnd(t *testing.T, args []string, env map[string]string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut syncBuffer
	err = runRecover(ctx, args, env, &out, &errOut)
	return out.String(), errOut.String(), err
}

// serveEnv is the environment of a normal authenticated server on dbURL.
func serveEnv(dbURL string) map[string]string {
	return map[string]string{
		"DATABASE_URL":               dbURL,
		"RIVERBANK_ADDR":             "127.0.0.1:0",
		"RIVERBANK_API_TOKENS":       testToken + "," + otherToken,
		"RIVERBANK_WORKERS":          "2",
		"RIVERBANK_SHUTDOWN_TIMEOUT": shutdownTimeout.String(),
	}
}

// emptyDB creates a database with nothing in it (not cloned from the
// migrated template) and drops it when the test ends.
func emptyDB(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	serverURL := testdb.ServerURL(t)
	admin, err := pgx.Connect(ctx, serverURL)
	require.NoError(t, err)
	defer admin.Close(ctx)
	name := "riverbank_e2e_" + randomHex(t, 6)
	_, err = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx := context.Background()
		admin, err := pgx.Connect(ctx, serverURL)
		if err != nil {
			t.Logf("drop %s: %v", name, err)
			return
		}
		defer admin.Close(ctx)
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	})
	u, err := url.Parse(serverURL)
	require.NoError(t, err)
	u.Path = "/" + name
	return u.String()
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

// closedPortURL is a database URL whose port nothing listens on.
func closedPortURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return "postgres://postgres:hunter2-secret@" + addr + "/riverbank?sslmode=disable&connect_timeout=5"
}

// testBundle is a running server and what tests need to talk to it.
type testBundle struct {
	proc    *process
	baseURL string
	dbURL   string
	pool    *pgxpool.Pool
	client  *http.Client
}

// setup starts `riverbank serve` on a fresh migrated database.
func setup(t *testing.T) *testBundle {
	t.Helper()
	dbURL, pool := testdb.NewDB(t)
	b := startServer(t, serveEnv(dbURL))
	b.pool = pool
	return b
}

func startServer(t *testing.T, env map[string]string, args ...string) *testBundle {
	t.Helper()
	proc := start(t, append([]string{"serve"}, args...), env)
	addr := proc.waitServing(t)
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1", host)
	require.NotEqual(t, "0", port, "the logged address is the real port, not :0")
	transport := &http.Transport{}
	t.Cleanup(transport.CloseIdleConnections)
	return &testBundle{
		proc:    proc,
		baseURL: "http://" + addr,
		dbURL:   env["DATABASE_URL"],
		client:  &http.Client{Timeout: 30 * time.Second, Transport: transport, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

// reqOpt changes a request before it is sent.
type reqOpt func(*http.Request)

func withBearer(tok string) reqOpt {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}

func withBasic(user, pass string) reqOpt {
	return func(r *http.Request) { r.SetBasicAuth(user, pass) }
}

func (b *testBundle) do(t *testing.T, method, path string, body io.Reader, opts ...reqOpt) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, b.baseURL+path, body)
	require.NoError(t, err)
	for _, o := range opts {
		o(req)
	}
	resp, err := b.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, data
}

func (b *testBundle) get(t *testing.T, path string, opts ...reqOpt) (*http.Response, []byte) {
	t.Helper()
	return b.do(t, http.MethodGet, path, nil, opts...)
}

// problem is the problem+json body of every error.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Code   string `json:"code"`
}

func requireProblem(t *testing.T, resp *http.Response, body []byte, status int, code string) problem {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, "body: %s", body)
	require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	var p problem
	require.NoError(t, json.Unmarshal(body, &p), "body: %s", body)
	require.Equal(t, status, p.Status)
	require.Equal(t, code, p.Code)
	require.Equal(t, "https://riverbank.dev/problems/"+code, p.Type)
	require.NotEmpty(t, p.Title)
	return p
}

// probeArgs is a job kind no worker handles. Scheduled a day ahead on a
// queue nobody works, it stays put and shows up in job counts.
type probeArgs struct{}

func (probeArgs) Kind() string { return "e2e_probe" }

// unregisteredArgs is a kind River fetches and fails (no worker), so the
// executor has something in flight.
type unregisteredArgs struct {
	N int `json:"n"`
}

func (unregisteredArgs) Kind() string { return "e2e_unregistered" }

func insertClient(t *testing.T, pool *pgxpool.Pool) *river.Client[pgx.Tx] {
	t.Helper()
	c, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	require.NoError(t, err)
	return c
}

func TestCLI(t *testing.T) {
	t.Parallel()

	t.Run("NoCommandPrintsUsageAndFails", func(t *testing.T) {
		t.Parallel()
		_, stderr, err := runToEnd(t, nil, nil)
		require.EqualError(t, err, "no command given")
		require.Contains(t, stderr, "Usage: riverbank <command>")
	})

	for _, arg := range []string{"--help", "-h", "help"} {
		t.Run("Help"+arg, func(t *testing.T) {
			t.Parallel()
			stdout, _, err := runToEnd(t, []string{arg}, nil)
			require.NoError(t, err)
			for _, cmd := range []string{"serve", "migrate", "dev", "bench", "version"} {
				require.Regexp(t, `(?m)^  `+cmd+` `, stdout)
			}
		})
	}

	t.Run("ServeHelpListsFlagsWithEnvNames", func(t *testing.T) {
		t.Parallel()
		_, stderr, err := runToEnd(t, []string{"serve", "--help"}, nil)
		require.ErrorIs(t, err, flag.ErrHelp)
		require.Contains(t, stderr, "Usage: riverbank serve")
		for _, s := range []string{"-addr", "RIVERBANK_ADDR", "-database-url", "DATABASE_URL", "-api-tokens", "RIVERBANK_API_TOKENS",
			"-late-fee-day", "RIVERBANK_LATE_FEE_DAY", "-cob-schedule", "RIVERBANK_COB_SCHEDULE", "-migrate", "RIVERBANK_MIGRATE",
			"-shutdown-timeout", "RIVERBANK_SHUTDOWN_TIMEOUT", "-workers", "RIVERBANK_WORKERS"} {
			require.Contains(t, stderr, s)
		}
	})

	t.Run("MigrateHelpListsOnlyItsFlags", func(t *testing.T) {
		t.Parallel()
		_, stderr, err := runToEnd(t, []string{"migrate", "-h"}, nil)
		require.ErrorIs(t, err, flag.ErrHelp)
		require.Contains(t, stderr, "DATABASE_URL")
		require.NotContains(t, stderr, "RIVERBANK_LATE_FEE_DAY")
	})

	t.Run("DevHelp", func(t *testing.T) {
		t.Parallel()
		_, stderr, err := runToEnd(t, []string{"dev", "--help"}, nil)
		require.ErrorIs(t, err, flag.ErrHelp)
		require.Contains(t, stderr, "Usage: riverbank dev")
	})

	t.Run("Version", func(t *testing.T) {
		t.Parallel()
		stdout, _, err := runToEnd(t, []string{"version"}, nil)
		require.NoError(t, err)
		require.True(t, strings.HasPrefix(stdout, "riverbank "+riverbank.Version+" (go"), stdout)
	})

	t.Run("UnknownCommand", func(t *testing.T) {
		t.Parallel()
		_, stderr, err := runToEnd(t, []string{"frobnicate"}, nil)
		require.EqualError(t, err, `unknown command "frobnicate"`)
		require.Contains(t, stderr, "Usage: riverbank <command>")
	})

	t.Run("UnknownFlag", func(t *testing.T) {
		t.Parallel()
		_, _, err := runToEnd(t, []string{"serve", "--no-such-flag"}, nil)
		require.ErrorContains(t, err, "flag provided but not defined: -no-such-flag")
	})
}

func TestMigrateCommand(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	steps, err := db.ParseSteps(riverbank.SchemaSQL)
	require.NoError(t, err)

	t.Run("FreshDatabaseThenAlreadyCurrent", func(t *testing.T) {
		t.Parallel()
		dbURL := emptyDB(t)
		// A serve-only setting that is broken must not stop migrate.
		env := map[string]string{"DATABASE_URL": dbURL, "RIVERBANK_LATE_FEE_DAY": "40"}

		stdout, stderr, err := runToEnd(t, []string{"migrate"}, env)
		require.NoError(t, err, "stderr: %s", stderr)
		require.Contains(t, stdout, "applied River migration 1\n")
		for _, s := range steps {
			require.Contains(t, stdout, fmt.Sprintf("applied schema step %d (%s)\n", s.Version, s.Name))
		}
		require.Regexp(t, fmt.Sprintf(`schema current: River migration \d+, app step %d\n$`, len(steps)), stdout)

		pool, err := pgxpool.New(ctx, dbURL)
		require.NoError(t, err)
		defer pool.Close()
		m, err := db.NewMigrator(pool)
		require.NoError(t, err)
		st, err := m.RequireCurrent(ctx)
		require.NoError(t, err)
		require.Equal(t, len(steps), st.AppVersion)

		stdout, _, err = runToEnd(t, []string{"migrate"}, env)
		require.NoError(t, err)
		require.Equal(t, fmt.Sprintf("schema already current: River migration %d, app step %d\n", st.RiverVersion, len(steps)), stdout)
	})

	t.Run("ConcurrentRunsApplyOnce", func(t *testing.T) {
		t.Parallel()
		dbURL := emptyDB(t)
		const runs = 3
		outs := make([]string, runs)
		errs := make([]error, runs)
		var wg sync.WaitGroup
		for i := range runs {
			wg.Go(func() {
				outs[i], _, errs[i] = runToEnd(t, []string{"migrate"}, map[string]string{"DATABASE_URL": dbURL})
			})
		}
		wg.Wait()
		applied := 0
		for i := range runs {
			require.NoError(t, errs[i])
			if strings.Contains(outs[i], "applied schema step 1 ") {
				applied++
			} else {
				require.Contains(t, outs[i], "schema already current")
			}
		}
		require.Equal(t, 1, applied, "exactly one run applies the migrations: %q", outs)
	})

	t.Run("FlagOverridesEnv", func(t *testing.T) {
		t.Parallel()
		dbURL := emptyDB(t)
		stdout, _, err := runToEnd(t, []string{"migrate", "--database-url", dbURL}, map[string]string{"DATABASE_URL": closedPortURL(t)})
		require.NoError(t, err)
		require.Contains(t, stdout, "schema current:")
	})

	t.Run("NoDatabase", func(t *testing.T) {
		t.Parallel()
		_, _, err := runToEnd(t, []string{"migrate"}, nil)
		require.ErrorContains(t, err, "DATABASE_URL")
	})
}

func TestServeStartup(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("RefusesUnmigratedDatabase", func(t *testing.T) {
		t.Parallel()
		dbURL := emptyDB(t)
		_, _, err := runToEnd(t, []string{"serve"}, serveEnv(dbURL))
		require.ErrorContains(t, err, "run `riverbank migrate`")

		conn, err := pgx.Connect(ctx, dbURL)
		require.NoError(t, err)
		defer conn.Close(ctx)
		var tables int
		require.NoError(t, conn.QueryRow(ctx, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&tables))
		require.Zero(t, tables, "serve without --migrate changes nothing")
	})

	t.Run("MigrateFlagMigratesAndServes", func(t *testing.T) {
		t.Parallel()
		b := startServer(t, serveEnv(emptyDB(t)), "--migrate")
		resp, body := b.get(t, "/readyz")
		require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
		_, err := b.proc.stop(t)
		require.NoError(t, err)
	})

	t.Run("MigrateEnvMigratesAndServes", func(t *testing.T) {
		t.Parallel()
		env := serveEnv(emptyDB(t))
		env["RIVERBANK_MIGRATE"] = "1"
		b := startServer(t, env)
		resp, _ := b.get(t, "/readyz")
		require.Equal(t, http.StatusOK, resp.StatusCode)
	})

	t.Run("AuthOffServesWithoutTokens", func(t *testing.T) {
		t.Parallel()
		dbURL, _ := testdb.NewDB(t)
		env := serveEnv(dbURL)
		delete(env, "RIVERBANK_API_TOKENS")
		env["RIVERBANK_AUTH"] = "off"
		b := startServer(t, env)
		resp, body := b.get(t, "/v1/system/info")
		require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	})

	t.Run("ListenAddressInUse", func(t *testing.T) {
		t.Parallel()
		dbURL, _ := testdb.NewDB(t)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer ln.Close()
		env := serveEnv(dbURL)
		env["RIVERBANK_ADDR"] = ln.Addr().String()
		_, _, err = runToEnd(t, []string{"serve"}, env)
		require.ErrorContains(t, err, "listen on "+ln.Addr().String())
		require.ErrorContains(t, err, "RIVERBANK_ADDR")
	})

	// Configuration errors fail before any connection is tried: the database
	// URL points at a closed port, so getting past the configuration would
	// give a different error.
	configTests := []struct {
		name string
		env  map[string]string
		args []string
		// want is the whole error, or its start when it ends in "...".
		want string
	}{
		{
			name: "NoTokens",
			env:  map[string]string{"RIVERBANK_API_TOKENS": ""},
			want: "no API tokens: set RIVERBANK_API_TOKENS (comma-separated, 16+ characters each), or RIVERBANK_AUTH=off to run without authentication",
		},
		{
			name: "NoDatabase",
			env:  map[string]string{"DATABASE_URL": ""},
			want: "no database: set DATABASE_URL ...",
		},
		{
			name: "LateFeeDay",
			env:  map[string]string{"RIVERBANK_LATE_FEE_DAY": "40"},
			want: `invalid RIVERBANK_LATE_FEE_DAY="40": must be a whole number from 1 to 28`,
		},
		{
			name: "COBSchedule",
			env:  map[string]string{"RIVERBANK_COB_SCHEDULE": "nonsense"},
			want: `invalid RIVERBANK_COB_SCHEDULE="nonsense": must be a 5-field cron expression (e.g. "10 0 * * *") or off`,
		},
		{
			name: "OrderPaymentTimeout",
			env:  map[string]string{"RIVERBANK_ORDER_PAYMENT_TIMEOUT": "abc"},
			want: `invalid RIVERBANK_ORDER_PAYMENT_TIMEOUT="abc": must be a duration between 1s and 720h (e.g. 15m)`,
		},
		{
			name: "FlagOverridesValidEnv",
			env:  map[string]string{"RIVERBANK_LATE_FEE_DAY": "5"},
			args: []string{"--late-fee-day", "40"},
			want: `invalid --late-fee-day="40": must be a whole number from 1 to 28`,
		},
		{
			name: "ValidFlagOverridesInvalidEnv",
			env:  map[string]string{"RIVERBANK_LATE_FEE_DAY": "40", "RIVERBANK_API_TOKENS": ""},
			args: []string{"--late-fee-day", "5"},
			want: "no API tokens: ...",
		},
		{
			name: "InvalidDatabaseURLIsNotEchoed",
			env:  map[string]string{"DATABASE_URL": "mysql://root:hunter2-secret@db/x"},
			want: `invalid DATABASE_URL=(value hidden): must be a postgres:// URL or a key=value connection string`,
		},
		{
			name: "ShortTokenIsNotEchoed",
			env:  map[string]string{"RIVERBANK_API_TOKENS": testToken + ",hunter2-secret"},
			want: `invalid RIVERBANK_API_TOKENS=(value hidden): every token must be at least 16 characters of printable ASCII without spaces`,
		},
	}
	for _, tt := range configTests {
		t.Run("Config"+tt.name, func(t *testing.T) {
			t.Parallel()
			env := serveEnv(closedPortURL(t))
			for k, v := range tt.env {
				env[k] = v
			}
			begin := time.Now()
			_, _, err := runToEnd(t, append([]string{"serve"}, tt.args...), env)
			require.Error(t, err)
			if prefix, ok := strings.CutSuffix(tt.want, "..."); ok {
				require.True(t, strings.HasPrefix(err.Error(), prefix), "error %q should start with %q", err, prefix)
			} else {
				require.EqualError(t, err, tt.want)
			}
			require.NotContains(t, err.Error(), "hunter2")
			require.Less(t, time.Since(begin), 2*time.Second, "configuration errors need no network")
		})
	}

	// A database that stays unreachable: serve waits RIVERBANK_DATABASE_WAIT
	// (saying so once), then exits with the reason. TestServeWaitsForDatabase
	// (outage_test.go) covers the database coming up during the wait.
	t.Run("UnreachableDatabase", func(t *testing.T) {
		t.Parallel()
		dbURL := closedPortURL(t)
		u, err := url.Parse(dbURL)
		require.NoError(t, err)
		env := serveEnv(dbURL)
		env["RIVERBANK_DATABASE_WAIT"] = "2s"
		_, stderr, err := runToEnd(t, []string{"serve"}, env)
		require.Error(t, err)
		require.Contains(t, err.Error(), "cannot reach the database at "+u.Host+` (database "riverbank") after waiting 2s (RIVERBANK_DATABASE_WAIT)`)
		require.Contains(t, err.Error(), "connection refused")
		require.Contains(t, err.Error(), "DATABASE_URL")
		require.NotContains(t, err.Error(), "hunter2", "the password is never shown")
		require.Equal(t, 1, strings.Count(stderr, "cannot reach the database; waiting for it"), "the wait is logged once, not per attempt:\n%s", stderr)
		require.NotContains(t, stderr, "hunter2")

		env["RIVERBANK_DATABASE_WAIT"] = "0s"
		_, stderr, err = runToEnd(t, []string{"serve"}, env)
		require.Error(t, err)
		require.Contains(t, err.Error(), "cannot reach the database at "+u.Host+` (database "riverbank"): `, "no wait: one attempt")
		require.NotContains(t, stderr, "waiting for it")
	})
}

func TestServeHTTP(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	// Jobs nobody works, so job counts and queue depth have something to
	// show: one scheduled a day ahead, one available now on a queue no
	// client serves.
	inserter := insertClient(t, b.pool)
	probe, err := inserter.Insert(ctx, probeArgs{}, &river.InsertOpts{Queue: "e2e_probe", ScheduledAt: time.Now().Add(24 * time.Hour)})
	require.NoError(t, err)
	_, err = inserter.Insert(ctx, probeArgs{}, &river.InsertOpts{Queue: "e2e_idle"})
	require.NoError(t, err)

	t.Run("Healthz", func(t *testing.T) {
		t.Parallel()
		resp, body := b.get(t, "/healthz")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.JSONEq(t, `{"status":"ok"}`, string(body))
	})

	t.Run("Readyz", func(t *testing.T) {
		t.Parallel()
		resp, body := b.get(t, "/readyz")
		require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
		require.JSONEq(t, `{"status":"ready"}`, string(body))
	})

	t.Run("OpenAPIJSON", func(t *testing.T) {
		t.Parallel()
		resp, body := b.get(t, "/openapi.json")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		var doc struct {
			OpenAPI string                     `json:"openapi"`
			Info    struct{ Title string }     `json:"info"`
			Paths   map[string]json.RawMessage `json:"paths"`
		}
		require.NoError(t, json.Unmarshal(body, &doc))
		require.Regexp(t, `^3\.1\.\d+$`, doc.OpenAPI)
		require.Equal(t, "riverbank", doc.Info.Title)
		require.Contains(t, doc.Paths, "/v1/system/info")
	})

	t.Run("OpenAPIYAML", func(t *testing.T) {
		t.Parallel()
		resp, body := b.get(t, "/openapi.yaml")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Regexp(t, `(?m)^openapi: "?3\.1\.\d+"?$`, string(body))
		require.Contains(t, string(body), "/v1/system/info:")
	})

	t.Run("DocsAreServedFromTheBinary", func(t *testing.T) {
		t.Parallel()
		resp, body := b.get(t, "/docs")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
		require.Contains(t, resp.Header.Get("Content-Security-Policy"), "script-src 'self'")
		html := string(body)
		require.NotContains(t, html, "://", "no absolute URLs: the page must render offline")

		refs := regexp.MustCompile(`(?:src|href)="([^"]*)"`).FindAllStringSubmatch(html, -1)
		require.GreaterOrEqual(t, len(refs), 2, "a script and a stylesheet")
		for _, m := range refs {
			ref := m[1]
			require.True(t, strings.HasPrefix(ref, "/docs/assets/"), "asset %q is same-origin under /docs/assets/", ref)
			resp, asset := b.get(t, ref)
			require.Equal(t, http.StatusOK, resp.StatusCode, ref)
			require.Greater(t, len(asset), 10_000, "%s is the real asset", ref)
		}
		require.Contains(t, html, `apiDescriptionUrl="/openapi.yaml"`)
	})

	t.Run("SystemInfoNeedsAToken", func(t *testing.T) {
		t.Parallel()
		resp, body := b.get(t, "/v1/system/info")
		p := requireProblem(t, resp, body, http.StatusUnauthorized, "unauthorized")
		require.Equal(t, "missing bearer token", p.Detail)
		require.True(t, strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer "))

		resp, body = b.get(t, "/v1/system/info", withBearer("wrong-token-0123456789abcdef"))
		p = requireProblem(t, resp, body, http.StatusUnauthorized, "unauthorized")
		require.Equal(t, "invalid credentials", p.Detail)

		// Basic auth is for the River UI only.
		resp, body = b.get(t, "/v1/system/info", withBasic("user", testToken))
		requireProblem(t, resp, body, http.StatusUnauthorized, "unauthorized")

		// The token must match exactly, not by prefix.
		resp, body = b.get(t, "/v1/system/info", withBearer(testToken[:len(testToken)-1]))
		requireProblem(t, resp, body, http.StatusUnauthorized, "unauthorized")
	})

	t.Run("SystemInfo", func(t *testing.T) {
		t.Parallel()
		steps, err := db.ParseSteps(riverbank.SchemaSQL)
		require.NoError(t, err)

		type queue struct {
			Name        string           `json:"name"`
			JobsByState map[string]int64 `json:"jobs_by_state"`
		}
		var info struct {
			Version   string `json:"version"`
			GoVersion string `json:"go_version"`
			Schema    struct {
				AppVersion   int  `json:"app_version"`
				AppWant      int  `json:"app_want"`
				RiverVersion int  `json:"river_version"`
				RiverWant    int  `json:"river_want"`
				Current      bool `json:"current"`
			} `json:"schema"`
			Queues      []queue          `json:"queues"`
			JobsByState map[string]int64 `json:"jobs_by_state"`
		}
		// Every listed token works.
		for _, tok := range []string{testToken, otherToken} {
			resp, body := b.get(t, "/v1/system/info", withBearer(tok))
			require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
			require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			require.NoError(t, json.Unmarshal(body, &info))
		}
		require.Equal(t, riverbank.Version, info.Version)
		require.True(t, strings.HasPrefix(info.GoVersion, "go"))
		require.True(t, info.Schema.Current)
		require.Equal(t, len(steps), info.Schema.AppVersion)
		require.Equal(t, len(steps), info.Schema.AppWant)
		require.Positive(t, info.Schema.RiverWant)
		require.Equal(t, info.Schema.RiverWant, info.Schema.RiverVersion)
		require.GreaterOrEqual(t, info.JobsByState["scheduled"], int64(1))

		byName := map[string]queue{}
		for _, q := range info.Queues {
			byName[q.Name] = q
		}
		require.Contains(t, byName, "e2e_probe")
		require.Equal(t, map[string]int64{"scheduled": 1}, byName["e2e_probe"].JobsByState)
		require.Contains(t, byName, "e2e_idle")
		require.Equal(t, map[string]int64{"available": 1}, byName["e2e_idle"].JobsByState)
		require.GreaterOrEqual(t, info.JobsByState["available"], int64(1))
	})

	t.Run("SystemInfoListsWorkedQueues", func(t *testing.T) {
		t.Parallel()
		// River records its queues once its producers start.
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			req, err := http.NewRequest(http.MethodGet, b.baseURL+"/v1/system/info", nil)
			require.NoError(c, err)
			withBearer(testToken)(req)
			resp, err := b.client.Do(req)
			require.NoError(c, err)
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			require.NoError(c, err)
			require.Equal(c, http.StatusOK, resp.StatusCode)
			require.Contains(c, string(body), `"name":"default"`)
		}, 10*time.Second, 50*time.Millisecond)
	})

	t.Run("Metrics", func(t *testing.T) {
		t.Parallel()
		resp, body := b.get(t, "/metrics")
		requireProblem(t, resp, body, http.StatusUnauthorized, "unauthorized")

		resp, _ = b.get(t, "/healthz")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		resp, body = b.get(t, "/metrics", withBearer(testToken))
		require.Equal(t, http.StatusOK, resp.StatusCode)
		text := string(body)
		require.Regexp(t, `(?m)^riverbank_http_request_duration_seconds_count\{method="GET",route="GET /healthz",status="200"\} [1-9]`, text)
		require.Regexp(t, `(?m)^riverbank_jobs\{kind="e2e_probe",state="scheduled"\} 1$`, text)
		require.Regexp(t, `(?m)^riverbank_jobs\{kind="e2e_probe",state="available"\} 1$`, text)
		require.Regexp(t, `(?m)^riverbank_queue_depth\{queue="e2e_idle"\} 1$`, text)
		require.Regexp(t, `(?m)^riverbank_metrics_db_scrape_errors 0$`, text)
	})

	t.Run("RiverUI", func(t *testing.T) {
		t.Parallel()
		resp, body := b.get(t, "/riverui/")
		requireProblem(t, resp, body, http.StatusUnauthorized, "unauthorized")
		require.Equal(t, `Bearer realm="riverbank"`, resp.Header.Get("WWW-Authenticate"))
		// A browser is sent to the login form, which needs no token.
		resp, _ = b.get(t, "/riverui/", func(r *http.Request) { r.Header.Set("Accept", "text/html") })
		require.Equal(t, http.StatusSeeOther, resp.StatusCode)
		require.Equal(t, "/riverui/login?next=%2Friverui%2F", resp.Header.Get("Location"))
		resp, body = b.get(t, "/riverui/login")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		require.Contains(t, string(body), `action="/riverui/login"`)
		// The UI's own auth does not open the API: a path that leaves
		// /riverui/ is cleaned and redirected, never served.
		resp, _ = b.get(t, "/riverui/../v1/system/info")
		require.NotEqual(t, http.StatusOK, resp.StatusCode)
		resp, _ = b.get(t, "/v1/system/info", withBasic("", testToken))
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "basic auth is for the River UI only")

		resp, body = b.get(t, "/riverui/", withBasic("someone", "wrong-password-0123456789"))
		requireProblem(t, resp, body, http.StatusUnauthorized, "unauthorized")

		for _, opt := range []reqOpt{withBasic("anyone", testToken), withBasic("", otherToken), withBearer(testToken)} {
			resp, body = b.get(t, "/riverui/", opt)
			require.Equal(t, http.StatusOK, resp.StatusCode)
			require.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html"), resp.Header.Get("Content-Type"))
			require.Contains(t, strings.ToLower(string(body)), "<html")
		}

		resp, _ = b.get(t, "/riverui")
		require.Equal(t, http.StatusMovedPermanently, resp.StatusCode)
		require.Equal(t, "/riverui/", resp.Header.Get("Location"))

		// The UI's API reads the same database.
		resp, body = b.get(t, fmt.Sprintf("/riverui/api/jobs/%d", probe.Job.ID), withBasic("anyone", testToken))
		require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
		require.Contains(t, string(body), `"kind":"e2e_probe"`)
	})

	t.Run("UnknownRoute", func(t *testing.T) {
		t.Parallel()
		resp, body := b.get(t, "/v1/no-such-thing", withBearer(testToken))
		p := requireProblem(t, resp, body, http.StatusNotFound, "not_found")
		require.Contains(t, p.Detail, "/v1/no-such-thing")

		// Without a token even the existence of a route is not revealed.
		resp, body = b.get(t, "/v1/no-such-thing")
		requireProblem(t, resp, body, http.StatusUnauthorized, "unauthorized")
	})

	t.Run("WrongMethodIs405", func(t *testing.T) {
		t.Parallel()
		resp, body := b.do(t, http.MethodDelete, "/v1/system/info", nil, withBearer(testToken))
		p := requireProblem(t, resp, body, http.StatusMethodNotAllowed, "method_not_allowed")
		require.Equal(t, "GET", resp.Header.Get("Allow"))
		require.Contains(t, p.Detail, "DELETE")

		resp, body = b.do(t, http.MethodPut, "/v1/accounts", nil, withBearer(testToken))
		requireProblem(t, resp, body, http.StatusMethodNotAllowed, "method_not_allowed")
		require.Equal(t, "GET, POST", resp.Header.Get("Allow"))
	})

	t.Run("BodyOverOneMiB", func(t *testing.T) {
		t.Parallel()
		big := bytes.Repeat([]byte("x"), 1<<20+1)
		resp, body := b.do(t, http.MethodPost, "/v1/system/info", bytes.NewReader(big), withBearer(testToken))
		p := requireProblem(t, resp, body, http.StatusRequestEntityTooLarge, "request_too_large")
		require.Contains(t, p.Detail, "1048576")
	})
}

func TestReadyzReportsOutdatedSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	// Forget the newest schema step, as if the binary were newer than the
	// database.
	_, err := b.pool.Exec(ctx, "DELETE FROM riverbank_schema_step WHERE version = (SELECT max(version) FROM riverbank_schema_step)")
	require.NoError(t, err)

	resp, body := b.get(t, "/readyz")
	p := requireProblem(t, resp, body, http.StatusServiceUnavailable, "unavailable")
	require.Equal(t, "not ready: database schema is out of date: run `riverbank migrate`", p.Detail)

	resp, _ = b.get(t, "/healthz")
	require.Equal(t, http.StatusOK, resp.StatusCode, "the process is still up")

	resp, body = b.get(t, "/v1/system/info", withBearer(testToken))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, string(body), `"current":false`)
}

func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)

	// Keep the executor busy: River fetches these, fails them (no worker
	// for the kind) and records the failure, over and over while we stop.
	const jobs = 300
	params := make([]river.InsertManyParams, jobs)
	for i := range params {
		params[i] = river.InsertManyParams{Args: unregisteredArgs{N: i}}
	}
	_, err := insertClient(t, b.pool).InsertMany(ctx, params)
	require.NoError(t, err)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var attempted int
		require.NoError(c, b.pool.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE kind = 'e2e_unregistered' AND attempted_at IS NOT NULL").Scan(&attempted))
		require.Positive(c, attempted)
	}, 10*time.Second, 5*time.Millisecond, "River works jobs")

	resp, _ := b.get(t, "/healthz")
	require.Equal(t, http.StatusOK, resp.StatusCode)

	took, err := b.proc.stop(t)
	require.NoError(t, err)
	require.Less(t, took, shutdownTimeout, "run returns within RIVERBANK_SHUTDOWN_TIMEOUT")
	require.Contains(t, b.proc.stderr.String(), `"msg":"shutdown complete"`)

	var running int
	require.NoError(t, b.pool.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE state = 'running'").Scan(&running))
	require.Zero(t, running, "no job is left running")

	_, err = net.DialTimeout("tcp", strings.TrimPrefix(b.baseURL, "http://"), time.Second)
	require.Error(t, err, "the listener is closed")
}

func TestDev(t *testing.T) {
	t.Parallel()
	dbURL := emptyDB(t)
	env := serveEnv(dbURL)
	// A key of its own, so dev does not write .riverbank/webhook-key into
	// the package directory.
	env["RIVERBANK_WEBHOOK_KEY"] = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	proc := start(t, []string{"dev"}, env)
	addr := proc.waitServing(t)
	base := "http://" + addr

	out := proc.stdout.String()
	require.Contains(t, out, "API docs:   "+base+"/docs\n")
	require.Contains(t, out, "River UI:   "+base+"/riverui/")
	require.Contains(t, out, "Dev token:  "+testToken+"\n")
	require.Contains(t, out, "Database:   "+dbURL+"\n")

	// dev migrates by itself.
	resp, err := http.Get(base + "/readyz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)

	_, err = proc.stop(t)
	require.NoError(t, err)
}
