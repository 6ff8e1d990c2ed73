package api_test

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/danielgtaylor/huma/v2/humatest"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"riverbank/api"
	"riverbank/internal/db"
	"riverbank/internal/ledger"
	"riverbank/internal/testkit"
)

// ledgerAPIBundle is the API on a transaction of the package's shared test
// database that is rolled back when the test ends (testkit.Tx): every
// request of the test runs in a savepoint of it, so the test can count
// rows before and after a request and never sees other tests' writes.
type ledgerAPIBundle struct {
	ctx    context.Context
	tx     pgx.Tx
	api    humatest.TestAPI
	store  *db.Store
	ledger *ledger.Service
	// suffix makes account codes and idempotency keys unique to the test.
	suffix string
}

func setupLedgerAPI(t *testing.T) *ledgerAPIBundle {
	t.Helper()
	k := testkit.Tx(t)
	return &ledgerAPIBundle{ctx: k.Ctx, tx: k.Tx, api: k.API(t), store: k.Store, ledger: k.Services.Ledger, suffix: k.Suffix}
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

// requireProblem checks a problem+json answer (testkit.RequireProblem).
func (b *ledgerAPIBundle) requireProblem(t *testing.T, rec *httptest.ResponseRecorder, code string, statuses ...int) *api.Problem {
	t.Helper()
	return testkit.RequireProblem(t, rec, code, statuses...)
}

func decodeLedgerJSON[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	return testkit.DecodeJSON[T](t, rec)
}
