package ledger_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"riverbank/internal/db"
	"riverbank/internal/ledger"
	"riverbank/internal/testkit"
)

// requireAppliedOnce checks an account after its queue drained: the balance
// is the sum of its postings, applied_postings their count, none pending,
// and the two ways a posting is applied never overlap: the watermark's
// batches (ledger_application) plus the postings applied on their own
// (marked_at) add up to exactly the balance and the count.
func requireAppliedOnce(t *testing.T, b *testBundle, a *ledger.Account) {
	t.Helper()
	var sum, n, appSum, appN, markedSum, markedN, pending int64
	require.NoError(t, b.pool.QueryRow(b.ctx, `
		SELECT (SELECT coalesce(sum(amount_minor), 0) FROM ledger_posting WHERE account_id = $1)::bigint,
		       (SELECT count(*) FROM ledger_posting WHERE account_id = $1),
		       (SELECT coalesce(sum(total_minor), 0) FROM ledger_application WHERE account_id = $1)::bigint,
		       (SELECT coalesce(sum(postings), 0) FROM ledger_application WHERE account_id = $1)::bigint,
		       (SELECT coalesce(sum(amount_minor), 0) FROM ledger_posting WHERE account_id = $1 AND marked_at IS NOT NULL)::bigint,
		       (SELECT count(*) FROM ledger_posting WHERE account_id = $1 AND marked_at IS NOT NULL),
		       (SELECT count(*) FROM ledger_posting_state WHERE account_id = $1 AND applied_at IS NULL)`, a.ID).
		Scan(&sum, &n, &appSum, &appN, &markedSum, &markedN, &pending))
	got, err := b.svc.GetAccount(b.ctx, a.Code, a.Currency)
	require.NoError(t, err)
	require.Zero(t, pending, "pending postings of %s", a.Code)
	require.Zero(t, got.PendingCount)
	require.Equal(t, sum, got.BalanceMinor, "balance of %s", a.Code)
	require.Equal(t, n, got.AppliedPostings, "applied postings of %s", a.Code)
	require.Equal(t, sum, appSum+markedSum, "%s: watermark batches %d + marked %d", a.Code, appSum, markedSum)
	require.Equal(t, n, appN+markedN, "%s: watermark batches %d postings + marked %d", a.Code, appN, markedN)
}

func applyWatermark(t *testing.T, b *testBundle, accountID int64, limit int, stall time.Duration) ledger.ApplyResult {
	t.Helper()
	res, err := db.InTxV(b.ctx, b.store, func(tx *db.Tx) (ledger.ApplyResult, error) {
		return ledger.ApplyWatermarkTx(b.ctx, tx, accountID, limit, stall)
	})
	require.NoError(t, err)
	return res
}

// TestApplyWatermarkHeldBack: a transaction that stays open holds the
// horizon back; postings committed after it wait for it (the watermark
// cannot pass them) until they are older than the stall limit, then are
// applied on their own; the open transaction's own posting is applied by
// the watermark once it commits; nothing is applied twice.
func TestApplyWatermarkHeldBack(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	a := b.createAccount(t, b.code("wm:a"), "ASSET", "CNY")
	l := b.createAccount(t, b.code("wm:l"), "LIABILITY", "CNY")

	// The long transaction writes an entry (so it holds an xid) and stays
	// open until released.
	posted, release, longDone := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		longDone <- b.store.InTx(b.ctx, func(tx *db.Tx) error {
			_, _, err := ledger.PostTx(b.ctx, tx, transfer(b.code("wm:long"), a.Code, l.Code, 1000))
			close(posted)
			if err != nil {
				return err
			}
			<-release
			return nil
		})
	}()
	<-posted
	released := false
	defer func() {
		if !released {
			close(release)
			<-longDone
		}
	}()

	var sum int64
	for i := range 10 {
		amount := int64(i + 1)
		sum += amount
		_, _, err := b.svc.Post(b.ctx, transfer(b.code(fmt.Sprintf("wm:%d", i)), a.Code, l.Code, amount))
		require.NoError(t, err)
	}
	require.Equal(t, ledger.ApplyResult{}, applyWatermark(t, b, a.ID, 1000, time.Hour), "the open transaction holds the horizon below every committed posting")
	got, err := b.svc.GetAccount(b.ctx, a.Code, "")
	require.NoError(t, err)
	require.EqualValues(t, 10, got.PendingCount)
	require.Equal(t, sum, got.PendingMinor)

	time.Sleep(20 * time.Millisecond)
	require.Equal(t, ledger.ApplyResult{Applied: 10, TotalMinor: sum}, applyWatermark(t, b, a.ID, 1000, 10*time.Millisecond), "stalled postings are applied on their own")
	require.EqualValues(t, 10, b.count(t, "SELECT count(*) FROM ledger_posting WHERE account_id = $1 AND marked_at IS NOT NULL", a.ID))
	require.Equal(t, ledger.ApplyResult{}, applyWatermark(t, b, a.ID, 1000, time.Millisecond))

	released = true
	close(release)
	require.NoError(t, <-longDone)
	testkit.WaitFor(t, 30*time.Second, "the watermark to pass the long transaction's posting", func() bool {
		return applyWatermark(t, b, a.ID, 1000, time.Hour).Applied == 1
	})
	require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM ledger_application WHERE account_id = $1", a.ID))
	requireAppliedOnce(t, b, a)

	// The other side, in batches of 3 by the watermark alone (nothing there
	// is held back any more): 11 postings, four batches.
	testkit.WaitFor(t, 30*time.Second, "the credit side to apply", func() bool {
		applyWatermark(t, b, l.ID, 3, time.Hour)
		return b.count(t, "SELECT count(*) FROM ledger_posting_state WHERE account_id = $1 AND applied_at IS NULL", l.ID) == 0
	})
	requireAppliedOnce(t, b, l)
	require.Zero(t, b.count(t, "SELECT count(*) FROM ledger_posting WHERE account_id = $1 AND marked_at IS NOT NULL", l.ID))
	require.EqualValues(t, 11, b.count(t, "SELECT count(*) FROM ledger_entry_state WHERE status = 'APPLIED' AND applied_at IS NOT NULL"))
}

// TestApplyWatermarkRace runs writers (some rolling back, some holding
// their transaction open a while) against three appliers per account that
// use random batch sizes and stall limits, including the final "apply
// every committed posting" mode; every posting must be applied exactly
// once.
func TestApplyWatermarkRace(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	a := b.createAccount(t, b.code("race:a"), "ASSET", "CNY")
	l := b.createAccount(t, b.code("race:l"), "LIABILITY", "CNY")
	const writers, perWriter = 6, 40
	errRollback := errors.New("rollback")

	var wg sync.WaitGroup
	var done atomic.Bool
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				err := b.store.InTx(b.ctx, func(tx *db.Tx) error {
					_, _, err := ledger.PostTx(b.ctx, tx, transfer(b.code(fmt.Sprintf("race:%d:%d", w, i)), a.Code, l.Code, int64(1+rand.IntN(100))))
					if err != nil {
						return err
					}
					switch rand.IntN(10) {
					case 0:
						return errRollback
					case 1:
						time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
					}
					return nil
				})
				if err != nil && !errors.Is(err, errRollback) {
					t.Error(err)
					return
				}
			}
		})
	}
	var appliers sync.WaitGroup
	for _, acc := range []*ledger.Account{a, l, a, l, a, l} {
		appliers.Go(func() {
			for !done.Load() {
				res, err := db.InTxV(b.ctx, b.store, func(tx *db.Tx) (ledger.ApplyResult, error) {
					limit := 1 + rand.IntN(20)
					switch rand.IntN(3) {
					case 0:
						return ledger.ApplyBatchTx(b.ctx, tx, acc.ID, limit)
					case 1:
						return ledger.ApplyWatermarkTx(b.ctx, tx, acc.ID, limit, time.Millisecond)
					default:
						return ledger.ApplyWatermarkTx(b.ctx, tx, acc.ID, limit, time.Hour)
					}
				})
				if err != nil {
					t.Error(err)
					return
				}
				if res.Applied == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	done.Store(true)
	appliers.Wait()
	for _, acc := range []*ledger.Account{a, l} {
		testkit.WaitFor(t, 30*time.Second, "the rest to apply", func() bool {
			return applyWatermark(t, b, acc.ID, 1000, time.Millisecond).Applied == 0 &&
				b.count(t, "SELECT count(*) FROM ledger_posting_state WHERE account_id = $1 AND applied_at IS NULL", acc.ID) == 0
		})
		requireAppliedOnce(t, b, acc)
	}
	entries := b.count(t, "SELECT count(*) FROM ledger_entry")
	require.Positive(t, entries)
	require.Equal(t, entries, b.count(t, "SELECT count(*) FROM ledger_entry_state WHERE status = 'APPLIED' AND applied_at IS NOT NULL"))
	require.Positive(t, b.count(t, "SELECT count(*) FROM ledger_application"), "some batches went by watermark")
}

// TestRebaseAfterRestore: a database copied into another server keeps its
// watermarks' transaction ids while the server's own are far below them
// (simulated by moving a watermark far ahead). ledger_apply refuses to run
// on it; the rebase stamps what the watermark applied (with its application
// time) and resets the watermarks; afterwards new postings are applied
// normally and nothing is applied twice or lost.
func TestRebaseAfterRestore(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	a := b.createAccount(t, b.code("rs:a"), "ASSET", "CNY")
	l := b.createAccount(t, b.code("rs:l"), "LIABILITY", "CNY")
	for i := range 3 {
		_, _, err := b.svc.Post(b.ctx, transfer(b.code(fmt.Sprintf("rs:old:%d", i)), a.Code, l.Code, 10))
		require.NoError(t, err)
	}
	testkit.WaitFor(t, 30*time.Second, "the old postings applied by the watermark", func() bool {
		applyWatermark(t, b, a.ID, 100, time.Hour)
		return b.count(t, "SELECT count(*) FROM ledger_posting_state WHERE account_id = $1 AND applied_at IS NULL", a.ID) == 0
	})
	times := func(query string) []time.Time {
		t.Helper()
		rows, err := b.pool.Query(b.ctx, query, a.ID)
		require.NoError(t, err)
		out, err := pgx.CollectRows(rows, pgx.RowTo[time.Time])
		require.NoError(t, err)
		return out
	}
	before := times("SELECT applied_at FROM ledger_posting_state WHERE account_id = $1 ORDER BY id")
	require.Len(t, before, 3)
	require.Zero(t, b.count(t, "SELECT count(*) FROM ledger_posting WHERE account_id = $1 AND marked_at IS NOT NULL", a.ID), "applied by the watermark")

	// "Restore": the watermark's ids are now far above the server's.
	_, err := b.pool.Exec(b.ctx, `UPDATE ledger_account SET applied_through_xid = (pg_current_xact_id()::text::bigint + 1000000000)::text::xid8, applied_through_id = applied_through_id + 1000000 WHERE id = $1`, a.ID)
	require.NoError(t, err)
	_, err = db.InTxV(b.ctx, b.store, func(tx *db.Tx) (ledger.ApplyResult, error) {
		return ledger.ApplyWatermarkTx(b.ctx, tx, a.ID, 100, time.Hour)
	})
	require.ErrorContains(t, err, "restored into another server")

	stamped, err := db.RebaseAfterRestore(b.ctx, b.pool)
	require.NoError(t, err)
	require.EqualValues(t, 3, stamped)
	again, err := db.RebaseAfterRestore(b.ctx, b.pool)
	require.NoError(t, err)
	require.EqualValues(t, -1, again, "a second run finds nothing to do")
	after := times("SELECT marked_at FROM ledger_posting WHERE account_id = $1 ORDER BY id")
	require.Equal(t, before, after, "each posting keeps the time its batch applied it")

	for i := range 2 {
		_, _, err := b.svc.Post(b.ctx, transfer(b.code(fmt.Sprintf("rs:new:%d", i)), a.Code, l.Code, 7))
		require.NoError(t, err)
	}
	got, err := b.svc.GetAccount(b.ctx, a.Code, "")
	require.NoError(t, err)
	require.EqualValues(t, 2, got.PendingCount, "new postings are pending, not taken for applied")
	testkit.WaitFor(t, 30*time.Second, "the new postings applied", func() bool {
		applyWatermark(t, b, a.ID, 100, time.Hour)
		return b.count(t, "SELECT count(*) FROM ledger_posting_state WHERE account_id = $1 AND applied_at IS NULL", a.ID) == 0
	})
	// (The stamped postings are in the old batches and marked too, so
	// requireAppliedOnce's accounting does not apply across a rebase.)
	got, err = b.svc.GetAccount(b.ctx, a.Code, "")
	require.NoError(t, err)
	require.EqualValues(t, 3*10+2*7, got.BalanceMinor)
	require.EqualValues(t, 5, got.AppliedPostings)
	require.Zero(t, got.PendingCount)
}

// TestAppliedAtAcrossBatchBoundaries: with a limit that splits the pending
// postings into batches (the watermark stopping right after a batch's last
// posting), each posting's derived applied_at is its own batch's time.
func TestAppliedAtAcrossBatchBoundaries(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	a := b.createAccount(t, b.code("ba:a"), "ASSET", "CNY")
	l := b.createAccount(t, b.code("ba:l"), "LIABILITY", "CNY")
	for i := range 5 {
		_, _, err := b.svc.Post(b.ctx, transfer(b.code(fmt.Sprintf("ba:%d", i)), a.Code, l.Code, int64(i+1)))
		require.NoError(t, err)
	}
	// Wait until the horizon has passed all five, so the batches go by the
	// watermark (not the stall path), 2 + 2 + 1.
	testkit.WaitFor(t, 30*time.Second, "the horizon past the five postings", func() bool {
		var past bool
		require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT max(xid) < pg_snapshot_xmin(pg_current_snapshot()) FROM ledger_posting WHERE account_id = $1`, a.ID).Scan(&past))
		return past
	})
	for _, want := range []int{2, 2, 1} {
		require.Equal(t, want, applyWatermark(t, b, a.ID, 2, time.Hour).Applied)
		time.Sleep(5 * time.Millisecond) // distinct batch times
	}
	rows, err := b.pool.Query(b.ctx, `
		SELECT s.applied_at, la.applied_at
		  FROM ledger_posting_state s
		  JOIN ledger_posting p ON p.id = s.id
		  JOIN LATERAL (SELECT la.applied_at FROM ledger_application la
		                 WHERE la.account_id = p.account_id AND (la.through_xid, la.through_id) > (p.xid, p.id)
		                 ORDER BY la.through_xid, la.through_id LIMIT 1) la ON true
		 WHERE s.account_id = $1 ORDER BY p.xid, p.id`, a.ID)
	require.NoError(t, err)
	var got []time.Time
	for rows.Next() {
		var derived, batch time.Time
		require.NoError(t, rows.Scan(&derived, &batch))
		require.Equal(t, batch, derived)
		got = append(got, derived)
	}
	require.NoError(t, rows.Err())
	require.Len(t, got, 5)
	require.Equal(t, got[0], got[1], "first batch")
	require.Equal(t, got[2], got[3], "second batch")
	require.True(t, got[1].Before(got[2]) && got[3].Before(got[4]), "three batches in order: %v", got)
	require.EqualValues(t, 3, b.count(t, "SELECT count(*) FROM ledger_application WHERE account_id = $1", a.ID))
	require.Zero(t, b.count(t, "SELECT count(*) FROM ledger_posting WHERE account_id = $1 AND marked_at IS NOT NULL", a.ID))
	requireAppliedOnce(t, b, a)
}
