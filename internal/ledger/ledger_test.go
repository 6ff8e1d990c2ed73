package ledger_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/ledger"
	"riverbank/internal/testdb"
	"riverbank/internal/testkit"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// testBundle is what a ledger test works with. Tests on a rolled-back
// transaction (setup) have tx set and pool nil; tests that commit data or
// run goroutines (setupDB) have their own database and pool.
type testBundle struct {
	ctx    context.Context
	pool   *pgxpool.Pool
	tx     pgx.Tx
	dbtx   db.DBTX
	store  *db.Store
	svc    *ledger.Service
	suffix string // makes codes and keys unique within the shared database
}

// setup gives a test a transaction on the package's shared database that is
// rolled back at the end, a store on it and an insert-only River client
// (testkit.Tx).
func setup(t *testing.T) *testBundle {
	t.Helper()
	k := testkit.Tx(t)
	return &testBundle{ctx: k.Ctx, tx: k.Tx, dbtx: k.Tx, store: k.Store, svc: k.Services.Ledger, suffix: k.Suffix}
}

// setupDB gives a test its own migrated database with committed data
// (testkit.DB).
func setupDB(t testing.TB) *testBundle {
	t.Helper()
	k := testkit.DB(t, testkit.DBOptions{})
	return &testBundle{ctx: k.Ctx, pool: k.Pool, dbtx: k.Pool, store: k.Store, svc: k.Services.Ledger, suffix: k.Suffix}
}

// code returns an account code unique to this test.
func (b *testBundle) code(name string) string { return name + ":" + b.suffix }

func (b *testBundle) createAccount(t testing.TB, code, typ, currency string) *ledger.Account {
	t.Helper()
	a, created, err := b.svc.CreateAccount(b.ctx, ledger.AccountInput{Code: code, Name: "Account " + code, Type: typ, Currency: currency})
	require.NoError(t, err)
	require.True(t, created)
	return a
}

func (b *testBundle) count(t testing.TB, query string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, b.dbtx.QueryRow(b.ctx, query, args...).Scan(&n))
	return n
}

func transfer(key, debit, credit string, amount int64) ledger.EntryInput {
	return ledger.EntryInput{
		IdempotencyKey: key,
		Description:    "transfer " + key,
		Postings:       []ledger.PostingInput{{Account: debit, AmountMinor: amount}, {Account: credit, AmountMinor: -amount}},
	}
}

func requireCode(t testing.TB, err error, code string) {
	t.Helper()
	require.Error(t, err)
	require.Equal(t, code, riverbank.ErrorCode(err), "error: %v", err)
}

func TestEntryInputValidate(t *testing.T) {
	t.Parallel()

	two := func(a, b int64) []ledger.PostingInput {
		return []ledger.PostingInput{{Account: "platform:cash", AmountMinor: a}, {Account: "income:interest", AmountMinor: b}}
	}
	many := func(n int) []ledger.PostingInput {
		ps := make([]ledger.PostingInput, n)
		for i := range ps {
			ps[i] = ledger.PostingInput{Account: "platform:cash", AmountMinor: 1}
			if i%2 == 1 {
				ps[i].AmountMinor = -1
			}
		}
		return ps
	}

	tests := []struct {
		name    string
		in      ledger.EntryInput
		wantErr bool
	}{
		{"valid two postings", ledger.EntryInput{IdempotencyKey: "k", Postings: two(100, -100)}, false},
		{"valid many postings", ledger.EntryInput{IdempotencyKey: "k", Postings: many(ledger.MaxPostings)}, false},
		{"valid key at max length", ledger.EntryInput{IdempotencyKey: strings.Repeat("k", ledger.MaxKeyLen), Postings: two(1, -1)}, false},
		{"valid amount at range limit", ledger.EntryInput{IdempotencyKey: "k", Postings: two(ledger.MaxAmountMinor, -ledger.MaxAmountMinor)}, false},
		{"valid with currency", ledger.EntryInput{IdempotencyKey: "k", Currency: "CNY", Postings: two(1, -1)}, false},
		{"missing key", ledger.EntryInput{Postings: two(100, -100)}, true},
		{"key too long", ledger.EntryInput{IdempotencyKey: strings.Repeat("k", ledger.MaxKeyLen+1), Postings: two(100, -100)}, true},
		{"description too long", ledger.EntryInput{IdempotencyKey: "k", Description: strings.Repeat("d", ledger.MaxDescriptionLen+1), Postings: two(1, -1)}, true},
		{"no postings", ledger.EntryInput{IdempotencyKey: "k"}, true},
		{"one posting", ledger.EntryInput{IdempotencyKey: "k", Postings: two(100, -100)[:1]}, true},
		{"more than max postings", ledger.EntryInput{IdempotencyKey: "k", Postings: many(ledger.MaxPostings + 2)}, true},
		{"zero amount", ledger.EntryInput{IdempotencyKey: "k", Postings: []ledger.PostingInput{{Account: "platform:cash", AmountMinor: 0}, {Account: "income:interest", AmountMinor: 0}}}, true},
		{"zero amount among balanced", ledger.EntryInput{IdempotencyKey: "k", Postings: append(two(5, -5), ledger.PostingInput{Account: "platform:cash", AmountMinor: 0})}, true},
		{"bad account code uppercase", ledger.EntryInput{IdempotencyKey: "k", Postings: []ledger.PostingInput{{Account: "Platform:Cash", AmountMinor: 1}, {Account: "income:interest", AmountMinor: -1}}}, true},
		{"bad account code empty", ledger.EntryInput{IdempotencyKey: "k", Postings: []ledger.PostingInput{{Account: "", AmountMinor: 1}, {Account: "income:interest", AmountMinor: -1}}}, true},
		{"bad account code too long", ledger.EntryInput{IdempotencyKey: "k", Postings: []ledger.PostingInput{{Account: strings.Repeat("a", 129), AmountMinor: 1}, {Account: "income:interest", AmountMinor: -1}}}, true},
		{"unbalanced sum", ledger.EntryInput{IdempotencyKey: "k", Postings: two(100, -99)}, true},
		{"all debits", ledger.EntryInput{IdempotencyKey: "k", Postings: two(100, 100)}, true},
		{"amount above range", ledger.EntryInput{IdempotencyKey: "k", Postings: two(ledger.MaxAmountMinor+1, -(ledger.MaxAmountMinor + 1))}, true},
		{"NUL in description", ledger.EntryInput{IdempotencyKey: "k", Description: "a\x00b", Postings: two(5, -5)}, true},
		{"invalid UTF-8 in key", ledger.EntryInput{IdempotencyKey: "k\xff", Postings: two(5, -5)}, true},
		{"amount far above range sums to zero", ledger.EntryInput{IdempotencyKey: "k", Postings: two(1<<62, -(1 << 62))}, true},
		{"overflowing amounts wrap to zero", ledger.EntryInput{IdempotencyKey: "k", Postings: []ledger.PostingInput{
			{Account: "platform:cash", AmountMinor: 1 << 62}, {Account: "platform:cash", AmountMinor: 1 << 62},
			{Account: "platform:cash", AmountMinor: 1 << 62}, {Account: "platform:cash", AmountMinor: 1 << 62},
		}}, true},
		{"bad currency", ledger.EntryInput{IdempotencyKey: "k", Currency: "cny", Postings: two(1, -1)}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.in.Validate()
			if !tt.wantErr {
				require.NoError(t, err)
				return
			}
			requireCode(t, err, riverbank.EINVALID)
		})
	}
}

func TestPostTxRejectsBadInput(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		in   func(b *testBundle) ledger.EntryInput
		code string
	}{
		{"shape is validated first", func(b *testBundle) ledger.EntryInput {
			return transfer("", b.code("a"), b.code("b"), 1)
		}, riverbank.EINVALID},
		{"unknown account", func(b *testBundle) ledger.EntryInput {
			return transfer("k-"+b.suffix, b.code("a"), b.code("nope"), 1)
		}, riverbank.EUNPROCESSABLE},
		{"mixed currency", func(b *testBundle) ledger.EntryInput {
			return transfer("k-"+b.suffix, b.code("a"), b.code("usd"), 1)
		}, riverbank.EUNPROCESSABLE},
		{"unknown non-merchant account with merchant creation", func(b *testBundle) ledger.EntryInput {
			in := transfer("k-"+b.suffix, b.code("a"), "other:"+b.suffix, 1)
			in.CreateSystemAccounts = true
			return in
		}, riverbank.EUNPROCESSABLE},
		{"same key different payload", func(b *testBundle) ledger.EntryInput {
			return transfer("used-"+b.suffix, b.code("a"), b.code("b"), 2)
		}, riverbank.EIDEMPOTENCYCONFLICT},
		{"same key different urgency", func(b *testBundle) ledger.EntryInput {
			in := transfer("used-"+b.suffix, b.code("a"), b.code("b"), 1)
			in.Urgent = true
			return in
		}, riverbank.EIDEMPOTENCYCONFLICT},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			b.createAccount(t, b.code("a"), "ASSET", "CNY")
			b.createAccount(t, b.code("b"), "LIABILITY", "CNY")
			b.createAccount(t, b.code("usd"), "ASSET", "USD")
			_, created, err := b.svc.Post(b.ctx, transfer("used-"+b.suffix, b.code("a"), b.code("b"), 1))
			require.NoError(t, err)
			require.True(t, created)

			const counts = `SELECT (SELECT count(*) FROM ledger_entry) + (SELECT count(*) FROM ledger_posting) * 1000
				+ (SELECT count(*) FROM river_job) * 1000000 + (SELECT count(*) FROM ledger_account) * 1000000000`
			before := b.count(t, counts)
			_, _, err = b.svc.Post(b.ctx, tt.in(b))
			requireCode(t, err, tt.code)
			require.Equal(t, before, b.count(t, counts), "a rejected entry must write nothing")
		})
	}
}

func TestPostReplaysSameKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createAccount(t, b.code("a"), "ASSET", "CNY")
	b.createAccount(t, b.code("b"), "LIABILITY", "CNY")

	in := transfer("replay-"+b.suffix, b.code("a"), b.code("b"), 42)
	in.Urgent = true
	first, created, err := b.svc.Post(b.ctx, in)
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, "PENDING", first.Status)
	require.Len(t, first.Postings, 2)

	again, created, err := b.svc.Post(b.ctx, in)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, first.ID, again.ID)
	require.Equal(t, []int64{first.Postings[0].ID, first.Postings[1].ID}, []int64{again.Postings[0].ID, again.Postings[1].ID})
	require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key = $1", in.IdempotencyKey))
	require.EqualValues(t, 2, b.count(t, "SELECT count(*) FROM ledger_posting WHERE entry_id = $1", first.ID))
	// Urgent: one ledger.apply per account, in the entry's transaction.
	require.EqualValues(t, 2, b.count(t, "SELECT count(*) FROM river_job WHERE kind = 'ledger.apply'"))
}

func TestPostRefusesSystemKeys(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createAccount(t, b.code("a"), "ASSET", "CNY")
	b.createAccount(t, b.code("b"), "LIABILITY", "CNY")

	// A client must not be able to take an internal writer's key first.
	in := transfer(ledger.SystemKeyPrefix+"order-payment:p1", b.code("a"), b.code("b"), 42)
	_, _, err := b.svc.Post(b.ctx, in)
	require.Equal(t, riverbank.EINVALID, riverbank.ErrorCode(err))
	require.EqualValues(t, 0, b.count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key = $1", in.IdempotencyKey))

	// Internal writers post with it through PostTx.
	err = b.store.InTx(b.ctx, func(tx *db.Tx) error {
		_, _, err := ledger.PostTx(b.ctx, tx, in)
		return err
	})
	require.NoError(t, err)
	require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key = $1", in.IdempotencyKey))
}

func TestPostSameKeyConcurrently(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	b.createAccount(t, "hot:a", "ASSET", "CNY")
	b.createAccount(t, "hot:b", "LIABILITY", "CNY")

	const n = 20
	in := transfer("same-key", "hot:a", "hot:b", 7)
	in.Urgent = true
	var (
		wg      sync.WaitGroup
		start   = make(chan struct{})
		ids     = make([]int64, n)
		created = make([]bool, n)
		errs    = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			<-start
			e, c, err := b.svc.Post(b.ctx, in)
			errs[i], created[i] = err, c
			if e != nil {
				ids[i] = e.ID
			}
		})
	}
	close(start)
	wg.Wait()

	creators := 0
	for i := range n {
		require.NoError(t, errs[i], "call %d", i)
		require.Equal(t, ids[0], ids[i], "call %d", i)
		if created[i] {
			creators++
		}
	}
	require.Equal(t, 1, creators)
	require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM ledger_entry"))
	require.EqualValues(t, 2, b.count(t, "SELECT count(*) FROM ledger_posting"))
	require.EqualValues(t, 2, b.count(t, "SELECT count(*) FROM river_job WHERE kind = 'ledger.apply'"))
}

// TestLedgerBalanceEnforcedByDatabase writes entries with raw SQL, past
// PostTx's checks, to prove the database itself refuses unbalanced entries.
func TestLedgerBalanceEnforcedByDatabase(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	cash := b.createAccount(t, "bal:cash", "ASSET", "CNY")
	payable := b.createAccount(t, "bal:payable", "LIABILITY", "CNY")
	usd := b.createAccount(t, "bal:usd", "ASSET", "USD")

	insertEntry := func(t *testing.T, tx pgx.Tx, key string) int64 {
		t.Helper()
		var id int64
		require.NoError(t, tx.QueryRow(b.ctx, `INSERT INTO ledger_entry (idempotency_key, description, currency, payload_hash)
			VALUES ($1, 'raw', 'CNY', 'x') RETURNING id`, key).Scan(&id))
		return id
	}
	insertPosting := func(t *testing.T, tx pgx.Tx, entryID, accountID, amount int64) int64 {
		t.Helper()
		var id int64
		require.NoError(t, tx.QueryRow(b.ctx, "INSERT INTO ledger_posting (entry_id, account_id, amount_minor) VALUES ($1, $2, $3) RETURNING id", entryID, accountID, amount).Scan(&id))
		return id
	}
	requireViolation := func(t *testing.T, err error, constraint string) {
		t.Helper()
		var pgErr *pgconn.PgError
		require.True(t, errors.As(err, &pgErr), "want a check violation, got %v", err)
		want := "23514" // check_violation
		if strings.HasSuffix(constraint, "_fkey") {
			want = "23503" // foreign_key_violation
		}
		require.Equal(t, want, pgErr.Code, "error: %v", err)
		require.Equal(t, constraint, pgErr.ConstraintName, "error: %v", err)
	}
	// committed writes a balanced entry and returns its posting ids.
	committed := func(t *testing.T, key string) (int64, []int64) {
		t.Helper()
		tx, err := b.pool.Begin(b.ctx)
		require.NoError(t, err)
		defer tx.Rollback(b.ctx) //nolint:errcheck
		id := insertEntry(t, tx, key)
		p1 := insertPosting(t, tx, id, cash.ID, 500)
		p2 := insertPosting(t, tx, id, payable.ID, -500)
		require.NoError(t, tx.Commit(b.ctx))
		return id, []int64{p1, p2}
	}

	const missingAccount = int64(1) << 40
	commitCases := []struct {
		name     string
		postings [][2]int64 // account id, amount
		wantErr  string     // the constraint named, "" when the commit succeeds
	}{
		{"balanced commits", [][2]int64{{cash.ID, 100}, {payable.ID, -100}}, ""},
		{"balanced three-way commits", [][2]int64{{cash.ID, 100}, {payable.ID, -60}, {payable.ID, -40}}, ""},
		{"unbalanced sum fails", [][2]int64{{cash.ID, 100}, {payable.ID, -99}}, "ledger_entry_balanced"},
		{"one posting fails", [][2]int64{{cash.ID, 100}}, "ledger_entry_balanced"},
		{"no postings fails", nil, "ledger_entry_balanced"},
		{"foreign-currency posting fails", [][2]int64{{cash.ID, 100}, {usd.ID, -100}}, "ledger_entry_balanced"},
		{"posting to a missing account fails", [][2]int64{{cash.ID, 100}, {missingAccount, -100}}, "ledger_posting_account_id_fkey"},
	}
	for i, tt := range commitCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tx, err := b.pool.Begin(b.ctx)
			require.NoError(t, err)
			defer tx.Rollback(b.ctx) //nolint:errcheck
			key := "raw-" + string(rune('a'+i))
			id := insertEntry(t, tx, key)
			for _, p := range tt.postings {
				insertPosting(t, tx, id, p[0], p[1])
			}
			err = tx.Commit(b.ctx)
			if tt.wantErr == "" {
				require.NoError(t, err)
				require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key = $1", key))
				return
			}
			requireViolation(t, err, tt.wantErr)
			require.EqualValues(t, 0, b.count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key = $1", key))
		})
	}

	t.Run("deleting a posting fails", func(t *testing.T) {
		t.Parallel()
		_, ps := committed(t, "raw-delete")
		_, err := b.pool.Exec(b.ctx, "DELETE FROM ledger_posting WHERE id = $1", ps[0])
		requireViolation(t, err, "ledger_posting_immutable")
	})
	t.Run("changing an amount fails", func(t *testing.T) {
		t.Parallel()
		_, ps := committed(t, "raw-amount")
		_, err := b.pool.Exec(b.ctx, "UPDATE ledger_posting SET amount_minor = amount_minor + 1 WHERE id = $1", ps[0])
		requireViolation(t, err, "ledger_posting_immutable")
	})
	t.Run("moving a posting to another account fails", func(t *testing.T) {
		t.Parallel()
		_, ps := committed(t, "raw-move")
		_, err := b.pool.Exec(b.ctx, "UPDATE ledger_posting SET account_id = $2 WHERE id = $1", ps[1], cash.ID)
		requireViolation(t, err, "ledger_posting_immutable")
	})
	t.Run("applying a posting twice fails", func(t *testing.T) {
		t.Parallel()
		_, ps := committed(t, "raw-twice")
		_, err := b.pool.Exec(b.ctx, "UPDATE ledger_posting SET marked_at = now() WHERE id = $1", ps[0])
		require.NoError(t, err)
		_, err = b.pool.Exec(b.ctx, "UPDATE ledger_posting SET marked_at = now() WHERE id = $1", ps[0])
		requireViolation(t, err, "ledger_posting_immutable")
		_, err = b.pool.Exec(b.ctx, "UPDATE ledger_posting SET marked_at = NULL WHERE id = $1", ps[1])
		requireViolation(t, err, "ledger_posting_immutable")
		_, err = b.pool.Exec(b.ctx, "UPDATE ledger_posting SET xid = '1' WHERE id = $1", ps[1])
		requireViolation(t, err, "ledger_posting_immutable")
	})
	t.Run("adding a posting to a committed entry fails", func(t *testing.T) {
		t.Parallel()
		id, _ := committed(t, "raw-add")
		tx, err := b.pool.Begin(b.ctx)
		require.NoError(t, err)
		defer tx.Rollback(b.ctx) //nolint:errcheck
		_, err = tx.Exec(b.ctx, "INSERT INTO ledger_posting (entry_id, account_id, amount_minor) VALUES ($1, $2, 1)", id, cash.ID)
		if err == nil {
			err = tx.Commit(b.ctx)
		}
		require.Error(t, err, "an extra posting unbalanced a committed entry")
		require.EqualValues(t, 0, b.count(t, "SELECT coalesce(sum(amount_minor), 0) FROM ledger_posting WHERE entry_id = $1", id))
	})
}

func TestEnqueueApplyForPending(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.createAccount(t, b.code("sweep:a"), "ASSET", "CNY")
	l := b.createAccount(t, b.code("sweep:b"), "LIABILITY", "CNY")
	idle := b.createAccount(t, b.code("sweep:idle"), "ASSET", "CNY")
	for i, amount := range []int64{5, 6, 7} {
		_, _, err := b.svc.Post(b.ctx, transfer(b.code("sweep")+string(rune('0'+i)), a.Code, l.Code, amount))
		require.NoError(t, err)
	}
	require.EqualValues(t, 0, b.count(t, "SELECT count(*) FROM river_job"), "non-urgent entries enqueue nothing")

	for range 2 {
		var n int
		err := b.store.InTx(b.ctx, func(tx *db.Tx) error {
			var err error
			n, err = ledger.EnqueueApplyForPending(b.ctx, tx)
			return err
		})
		require.NoError(t, err)
		require.Equal(t, 2, n)

		rows, err := b.tx.Query(b.ctx, "SELECT (args->>'account_id')::bigint FROM river_job WHERE kind = 'ledger.apply' ORDER BY 1")
		require.NoError(t, err)
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		require.NoError(t, err)
		require.Equal(t, []int64{a.ID, l.ID}, ids, "one job per account with pending postings, none for %d", idle.ID)
		require.EqualValues(t, 2, b.count(t, "SELECT count(*) FROM river_job"))
	}
}

// TestApplyBatchTx checks one batch: the sum lands on the balance, the
// postings are marked, the entries count down and flip to APPLIED when
// their last posting is applied, and a rolled-back batch leaves nothing.
func TestApplyBatchTx(t *testing.T) {
	t.Parallel()

	t.Run("applies in batches and flips entries", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.createAccount(t, b.code("apply:a"), "ASSET", "CNY")
		l := b.createAccount(t, b.code("apply:b"), "LIABILITY", "CNY")
		var sum int64
		for i := range 5 {
			amount := int64(10 * (i + 1))
			sum += amount
			_, _, err := b.svc.Post(b.ctx, transfer(b.code("apply")+string(rune('0'+i)), a.Code, l.Code, amount))
			require.NoError(t, err)
		}
		apply := func(accountID int64, limit int) ledger.ApplyResult {
			res, err := db.InTxV(b.ctx, b.store, func(tx *db.Tx) (ledger.ApplyResult, error) {
				return ledger.ApplyBatchTx(b.ctx, tx, accountID, limit)
			})
			require.NoError(t, err)
			return res
		}
		require.Equal(t, ledger.ApplyResult{Applied: 3, TotalMinor: 60}, apply(a.ID, 3))
		require.Equal(t, ledger.ApplyResult{Applied: 2, TotalMinor: 90}, apply(a.ID, 3))
		require.Equal(t, ledger.ApplyResult{}, apply(a.ID, 3))
		got, err := b.svc.GetAccount(b.ctx, a.Code, "")
		require.NoError(t, err)
		require.Equal(t, sum, got.BalanceMinor)
		require.EqualValues(t, 5, got.AppliedPostings)
		require.Zero(t, got.PendingCount)
		require.EqualValues(t, 0, b.count(t, "SELECT count(*) FROM ledger_entry_state WHERE status = 'APPLIED'"), "the credit side is still pending")
		require.EqualValues(t, 5, b.count(t, "SELECT count(*) FROM ledger_entry_state WHERE pending_postings = 1"))

		require.Equal(t, ledger.ApplyResult{Applied: 5, TotalMinor: -sum}, apply(l.ID, 100))
		require.EqualValues(t, 5, b.count(t, "SELECT count(*) FROM ledger_entry_state WHERE status = 'APPLIED' AND pending_postings = 0 AND applied_at IS NOT NULL"))
	})

	t.Run("rolled back batch applies nothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a := b.createAccount(t, b.code("rb:a"), "ASSET", "CNY")
		l := b.createAccount(t, b.code("rb:b"), "LIABILITY", "CNY")
		_, _, err := b.svc.Post(b.ctx, transfer(b.code("rb"), a.Code, l.Code, 9))
		require.NoError(t, err)
		errCrash := errors.New("crash")
		err = b.store.InTx(b.ctx, func(tx *db.Tx) error {
			res, err := ledger.ApplyBatchTx(b.ctx, tx, a.ID, 100)
			require.NoError(t, err)
			require.Equal(t, 1, res.Applied)
			return errCrash
		})
		require.ErrorIs(t, err, errCrash)
		got, err := b.svc.GetAccount(b.ctx, a.Code, "")
		require.NoError(t, err)
		require.Zero(t, got.BalanceMinor)
		require.Zero(t, got.AppliedPostings)
		require.EqualValues(t, 9, got.PendingMinor)
		require.EqualValues(t, 2, b.count(t, "SELECT count(*) FROM ledger_posting_state p WHERE p.account LIKE 'rb:%' AND p.applied_at IS NULL"))
	})
}

func TestMerchantPayableCreatedOnFirstUse(t *testing.T) {
	t.Parallel()

	payment := func(key, merchant string, amount int64) ledger.EntryInput {
		return transfer(key, ledger.AccountPlatformCash, ledger.MerchantPayable(merchant), amount)
	}

	t.Run("created as liability with the flag", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		merchant := "m1-" + b.suffix
		in := payment("pay-"+b.suffix, merchant, 300)
		in.CreateSystemAccounts = true
		var e *ledger.Entry
		err := b.store.InTx(b.ctx, func(tx *db.Tx) error {
			var err error
			e, _, err = ledger.PostTx(b.ctx, tx, in)
			return err
		})
		require.NoError(t, err)
		require.Equal(t, "CNY", e.Currency)
		acc, err := b.svc.GetAccount(b.ctx, "merchant:"+merchant+":payable", "")
		require.NoError(t, err)
		require.Equal(t, "LIABILITY", acc.Type)
		require.Equal(t, "CNY", acc.Currency)
		require.False(t, acc.System)
		require.EqualValues(t, -300, acc.PendingMinor)
	})

	t.Run("unknown without the flag", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		merchant := "m1-" + b.suffix
		_, _, err := b.svc.Post(b.ctx, payment("pay-"+b.suffix, merchant, 300))
		requireCode(t, err, riverbank.EUNPROCESSABLE)
		_, err = b.svc.GetAccount(b.ctx, ledger.MerchantPayable(merchant), "")
		requireCode(t, err, riverbank.ENOTFOUND)
	})

	t.Run("every account new needs a currency", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		in := transfer("pay-"+b.suffix, ledger.MerchantPayable("x-"+b.suffix), ledger.MerchantPayable("y-"+b.suffix), 5)
		in.CreateSystemAccounts = true
		_, _, err := b.svc.Post(b.ctx, in)
		requireCode(t, err, riverbank.EINVALID)
		require.EqualValues(t, 0, b.count(t, "SELECT count(*) FROM ledger_account WHERE code LIKE '%' || $1 || '%'", b.suffix))

		in.Currency = "USD"
		e, _, err := b.svc.Post(b.ctx, in)
		require.NoError(t, err)
		require.Equal(t, "USD", e.Currency)
		require.EqualValues(t, 2, b.count(t, "SELECT count(*) FROM ledger_account WHERE code LIKE '%' || $1 || '%' AND currency = 'USD' AND type = 'LIABILITY'", b.suffix))
	})

	t.Run("concurrent first use creates one account", func(t *testing.T) {
		t.Parallel()
		b := setupDB(t)
		const n = 10
		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				<-start
				in := payment("pay-"+string(rune('a'+i)), "m1", int64(i+1))
				in.CreateSystemAccounts = true
				in.Urgent = i%2 == 0
				_, _, errs[i] = b.svc.Post(b.ctx, in)
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			require.NoError(t, err, "writer %d", i)
		}
		require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM ledger_account WHERE code = 'merchant:m1:payable' AND type = 'LIABILITY' AND currency = 'CNY'"))
		require.EqualValues(t, n, b.count(t, "SELECT count(*) FROM ledger_entry"))
		acc, err := b.svc.GetAccount(b.ctx, "merchant:m1:payable", "")
		require.NoError(t, err)
		require.EqualValues(t, -n*(n+1)/2, acc.PendingMinor)
	})
}

func TestTrialBalance(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.createAccount(t, b.code("tb:a"), "ASSET", "EUR")
	l := b.createAccount(t, b.code("tb:b"), "LIABILITY", "EUR")
	_, _, err := b.svc.Post(b.ctx, transfer(b.code("tb"), a.Code, l.Code, 70))
	require.NoError(t, err)
	err = b.store.InTx(b.ctx, func(tx *db.Tx) error {
		_, err := ledger.ApplyBatchTx(b.ctx, tx, a.ID, 10)
		return err
	})
	require.NoError(t, err)

	// Half applied: per currency the balances and the pending sums are
	// each non-zero (so not "balanced" until the queue drains, §5), but
	// together they are zero.
	eurTotals := func() ledger.CurrencyTotals {
		t.Helper()
		tb, err := b.svc.TrialBalance(b.ctx)
		require.NoError(t, err)
		require.Empty(t, tb.Mismatches)
		for _, c := range tb.Currencies {
			if c.Currency == "EUR" {
				return c
			}
		}
		t.Fatal("no EUR line in the trial balance")
		return ledger.CurrencyTotals{}
	}
	eur := eurTotals()
	require.Equal(t, ledger.CurrencyTotals{Currency: "EUR", BalanceTotalMinor: 70, PendingTotalMinor: -70, Accounts: 2, Balanced: false}, eur)

	err = b.store.InTx(b.ctx, func(tx *db.Tx) error {
		_, err := ledger.ApplyBatchTx(b.ctx, tx, l.ID, 10)
		return err
	})
	require.NoError(t, err)
	eur = eurTotals()
	require.Equal(t, ledger.CurrencyTotals{Currency: "EUR", BalanceTotalMinor: 0, PendingTotalMinor: 0, Accounts: 2, Balanced: true}, eur)
	tb, err := b.svc.TrialBalance(b.ctx)
	require.NoError(t, err)
	require.True(t, tb.Balanced, "%+v", tb)

	// A balance changed behind the ledger's back is caught.
	_, err = b.tx.Exec(b.ctx, "UPDATE ledger_account SET balance_minor = balance_minor + 1 WHERE id = $1", a.ID)
	require.NoError(t, err)
	tb, err = b.svc.TrialBalance(b.ctx)
	require.NoError(t, err)
	require.False(t, tb.Balanced)
	require.Equal(t, []ledger.Mismatch{{Code: a.Code, Currency: a.Currency, BalanceMinor: 71, AppliedSumMinor: 70}}, tb.Mismatches)
}
