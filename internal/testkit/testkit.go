// Package testkit is the one kit riverbank's tests share: a database (a
// rolled-back transaction, or a database of the test's own with committed
// data), the process's real services and River client on it, the HTTP API
// without a socket (humatest), and assertions on problem+json answers. It
// sits on internal/testdb, which finds a Postgres server (TEST_DATABASE_URL,
// a private cluster, or Docker). Only _test packages import it.
package testkit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"flag"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2/humatest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/api"
	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/domains"
	"riverbank/internal/testdb"
	"riverbank/jobs"
)

// Suffix returns 8 random hex characters: tests sharing a database make
// their codes, SKUs and keys unique with it (an uncommitted duplicate key
// would make one test wait for another's rollback).
func Suffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Config returns the configuration a process gets with no environment
// (every default of SPEC §9, validated), except that the automatic close
// of business is off (it would close the past dates tests give their
// loans) and that a webhook key is set (WebhookKey). A test that wants the scheduler sets COBSchedule and
// COBScheduleParsed itself (DBOptions.Configure).
func Config(t testing.TB) *config.Config {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	loader := config.Register(fs, func(string) string { return "" }, config.All)
	require.NoError(t, fs.Parse(nil))
	cfg, err := loader.Load(fs)
	require.NoError(t, err)
	cfg.COBSchedule, cfg.COBScheduleParsed = "off", nil
	// A fixed webhook key, so tests can create webhook subscriptions (a
	// process without RIVERBANK_WEBHOOK_KEY cannot).
	cfg.WebhookKeys = [][]byte{WebhookKey}
	return cfg
}

// WebhookKey is the RIVERBANK_WEBHOOK_KEY of Config.
var WebhookKey = []byte("riverbank-test-webhook-key-32byt")

// Bundle is a test's database with the process's services on it.
type Bundle struct {
	Ctx context.Context
	// DB is the test's executor: a pgx.Tx (Tx) or the pool (DB).
	DB db.DBTX
	// Tx is set by Tx: the transaction every write of the test runs in
	// (as savepoints), rolled back when the test ends.
	Tx pgx.Tx
	// Pool is set by DB: a pool on the test's own database.
	Pool *pgxpool.Pool
	// Inserter is an insert-only River client, the store's.
	Inserter *river.Client[pgx.Tx]
	Store    *db.Store
	Services *domains.Services
	Config   *config.Config
	Suffix   string
}

// Tx gives the test a transaction on the package's shared database, rolled
// back when the test ends, with the domain services on it. Each service
// call runs in a savepoint, so the test can count rows before and after.
func Tx(t testing.TB) *Bundle {
	t.Helper()
	tx := testdb.Tx(t)
	// A nil pool is enough for a client that only inserts in a caller's
	// transaction.
	client, err := river.NewClient(riverpgxv5.New(nil), &river.Config{})
	require.NoError(t, err)
	cfg := Config(t)
	store := db.NewStore(tx, client)
	return &Bundle{Ctx: context.Background(), DB: tx, Tx: tx, Inserter: client, Store: store,
		Services: domains.New(cfg, slog.New(slog.DiscardHandler), store), Config: cfg, Suffix: Suffix()}
}

// DBOptions change what DB builds.
type DBOptions struct {
	// MaxConns of the pool (default 16): enough for goroutines to race in
	// Postgres while parallel tests stay under max_connections.
	MaxConns int32
	// Configure, when set, changes the configuration before the services
	// are built.
	Configure func(cfg *config.Config)
}

// DB gives the test a database of its own (cloned from the migrated
// template) with committed data, a pool, and the services on it, for tests
// that run goroutines or workers.
func DB(t testing.TB, opts DBOptions) *Bundle {
	t.Helper()
	dsn, _ := testdb.NewDB(t)
	pcfg, err := pgxpool.ParseConfig(dsn)
	require.NoError(t, err)
	pcfg.MaxConns = 16
	if opts.MaxConns > 0 {
		pcfg.MaxConns = opts.MaxConns
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), pcfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	cfg := Config(t)
	if opts.Configure != nil {
		opts.Configure(cfg)
	}
	client, err := jobs.NewClient(pool, cfg, slog.New(slog.DiscardHandler), nil)
	require.NoError(t, err)
	store := db.NewStore(pool, client)
	return &Bundle{Ctx: context.Background(), DB: pool, Pool: pool, Inserter: client, Store: store,
		Services: domains.New(cfg, slog.New(slog.DiscardHandler), store), Config: cfg, Suffix: Suffix()}
}

// ID returns name made unique to this test.
func (b *Bundle) ID(name string) string { return name + "-" + b.Suffix }

// Count runs a query that returns one integer.
func (b *Bundle) Count(t testing.TB, query string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, b.DB.QueryRow(b.Ctx, query, args...).Scan(&n))
	return n
}

// Client builds the process's real River client (every worker and
// periodic job of jobs.NewRegistration) on a DB bundle, not started;
// change modifies the registration first (e.g. drop periodic jobs).
func (b *Bundle) Client(t testing.TB, change func(reg *jobs.Registration)) *river.Client[pgx.Tx] {
	t.Helper()
	require.NotNil(t, b.Pool, "Client needs a DB bundle")
	reg, err := jobs.NewRegistration(b.Services)
	require.NoError(t, err)
	if change != nil {
		change(reg)
	}
	client, err := jobs.NewClient(b.Pool, b.Config, b.Services.Logger, reg)
	require.NoError(t, err)
	return client
}

// Start starts client and stops it when the test ends.
func Start(t testing.TB, client *river.Client[pgx.Tx]) {
	t.Helper()
	require.NoError(t, client.Start(context.Background()))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		require.NoError(t, client.Stop(ctx))
	})
}

// API registers every operation on a humatest API over the bundle's
// services (no socket; requests run in the bundle's transaction).
func (b *Bundle) API(t testing.TB) humatest.TestAPI {
	t.Helper()
	_, tapi := humatest.New(t)
	api.Register(tapi, &api.Services{Services: b.Services, River: b.Inserter})
	return tapi
}

// WaitFor polls cond every 20 ms until it holds or timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RequireProblem checks that rec is a problem+json answer with one of
// statuses and the machine-readable code, leaking nothing internal.
func RequireProblem(t testing.TB, rec *httptest.ResponseRecorder, code string, statuses ...int) *api.Problem {
	t.Helper()
	require.Contains(t, statuses, rec.Code, "body: %s", rec.Body.String())
	require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
	p := DecodeJSON[api.Problem](t, rec)
	require.Equal(t, rec.Code, p.Status)
	require.Equal(t, code, p.Code, "body: %s", rec.Body.String())
	require.NotEmpty(t, p.Title)
	RequireNoLeak(t, rec.Body.String())
	return &p
}

// RequireNoLeak fails when body shows internal detail (SQL, Go errors,
// stacks).
func RequireNoLeak(t testing.TB, body string) {
	t.Helper()
	for _, leak := range []string{"SQLSTATE", "pgx", "pgconn", "riverbank error", "goroutine", ".go:"} {
		require.NotContains(t, body, leak)
	}
}

// DecodeJSON decodes a recorded response body.
func DecodeJSON[T any](t testing.TB, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(rec.Body.String()))
	require.NoError(t, dec.Decode(&v), "body: %s", rec.Body.String())
	return v
}

// RequireCode checks err carries the domain code.
func RequireCode(t testing.TB, err error, code string) *riverbank.Error {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, code, riverbank.ErrorCode(err), "error: %v", err)
	var de *riverbank.Error
	require.ErrorAs(t, err, &de)
	return de
}
