package api_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/danielgtaylor/huma/v2/humatest"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"riverbank/api"
	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/ledger"
	"riverbank/internal/testdb"
)

// ledgerAPIBundle is the API on a transaction of the package's shared test
// database that is rolled back when the test ends: every request of the
// test runs in a savepoint of it (db.Store.InTx on a pgx.Tx), so the test
// can count rows before and after a request and never sees other tests'
// writes.
type ledgerAPIBundle struct {
	ctx    context.Context
	tx     pgx.Tx
	api    humatest.TestAPI
	store  *db.Store
	ledger *ledger.Service
	// suffix makes account codes and idempotency keys unique to the test:
	// parallel tests share one database, and an uncommitted duplicate key
	// would make one test wait for the other's rollback.
	suffix string
}

// setupLedgerAPI registers every operation on a humatest API backed by a
// rolled-back transaction and an insert-only River client.
func setupLedgerAPI(t *testing.T) *ledgerAPIBundle {
	t.Helper()
	tx := testdb.Tx(t)
	// A nil pool is enough for a client that only inserts in a caller's
	// transaction.
	client, err := river.NewClient(riverpgxv5.New(nil), &river.Config{})
	require.NoError(t, err)
	store := db.NewStore(tx, client)
	svc := ledger.NewService(store)
	_, tapi := humatest.New(t)
	api.Register(tapi, &api.Services{
		Config: &config.Config{},
		Logger: slog.New(slog.DiscardHandler),
		Store:  store,
		River:  client,
		Ledger: svc,
	})
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return &ledgerAPIBundle{ctx: context.Background(), tx: tx, api: tapi, store: store, ledger: svc, suffix: hex.EncodeToString(b)}
}

// code returns an account code (or key) unique to this test.
func (b *ledgerAPIBundle) code(name string) string { return name + ":" + b.suffix }

func (b *ledgerAPIBundle) createAccount(t *testing.T, code, typ, currency string) *ledger.Account {
	t.Helper()
	a, created, err := b.ledger.CreateAccount(b.ctx, ledger.AccountInput{Code: code, Name: "Account " + code, Type: typ, Currency: currency})
	require.NoError(t, err)
	require.True(t, created)
	return a
}

// ledgerWrites counts the rows a ledger request may write.
type ledgerWrites struct {
	Accounts, Entries, Postings, Jobs int64
}

func (b *ledgerAPIBundle) writes(t *testing.T) ledgerWrites {
	t.Helper()
	var w ledgerWrites
	require.NoError(t, b.tx.QueryRow(b.ctx, `SELECT (SELECT count(*) FROM ledger_account), (SELECT count(*) FROM ledger_entry),
		(SELECT count(*) FROM ledger_posting), (SELECT count(*) FROM river_job)`).Scan(&w.Accounts, &w.Entries, &w.Postings, &w.Jobs))
	return w
}

// requireProblem checks that rec is a problem+json response with one of
// statuses and the machine-readable code, leaking nothing internal.
func (b *ledgerAPIBundle) requireProblem(t *testing.T, rec *httptest.ResponseRecorder, code string, statuses ...int) *api.Problem {
	t.Helper()
	require.Contains(t, statuses, rec.Code, "body: %s", rec.Body.String())
	require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
	p := decodeLedgerJSON[api.Problem](t, rec)
	require.Equal(t, rec.Code, p.Status)
	require.Equal(t, code, p.Code, "body: %s", rec.Body.String())
	require.NotEmpty(t, p.Title)
	for _, leak := range []string{"SQLSTATE", "pgx", "pgconn", "riverbank error", "goroutine", ".go:"} {
		require.NotContains(t, rec.Body.String(), leak)
	}
	return &p
}

func decodeLedgerJSON[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(rec.Body.String()))
	require.NoError(t, dec.Decode(&v), "body: %s", rec.Body.String())
	return v
}
