package collection_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/internal/cob"
	"riverbank/internal/collection"
	"riverbank/internal/db"
	"riverbank/internal/lending"
	"riverbank/internal/testkit"
)

// testBundle is a database of the test's own (committed data, goroutines,
// River workers) with the process's services on it.
type testBundle struct {
	*testkit.Bundle
	svc *collection.Service
}

func setup(t *testing.T, opts testkit.DBOptions) *testBundle {
	t.Helper()
	k := testkit.DB(t, opts)
	return &testBundle{Bundle: k, svc: k.Services.Collection}
}

// startWorkers runs the process's River client (every worker: case.merge,
// close of business, ledger) until the test ends.
func (b *testBundle) startWorkers(t *testing.T) {
	t.Helper()
	testkit.Start(t, b.Client(t, nil))
}

func (b *testBundle) creditLine(t *testing.T, borrower, currency string) {
	t.Helper()
	_, _, err := b.Services.Lending.PutCreditLine(b.Ctx, lending.CreditLineInput{BorrowerID: borrower, LimitMinor: 1_000_000_000_000, Currency: currency})
	require.NoError(t, err)
}

// loan creates a DEALER loan (so one DEALER repayment can pay everything
// it owes) that is overdue from 2026-01-03 on.
func (b *testBundle) loan(t *testing.T, borrower, loanNo string, principal int64) *lending.Loan {
	t.Helper()
	return b.loanDated(t, borrower, loanNo, principal, "2026-01-01", "2026-01-02")
}

func (b *testBundle) loanDated(t *testing.T, borrower, loanNo string, principal int64, start, due string) *lending.Loan {
	t.Helper()
	l, created, err := b.Services.Lending.CreateLoan(b.Ctx, lending.LoanInput{LoanNo: loanNo, BorrowerID: borrower, Currency: "CNY",
		PrincipalMinor: principal, AnnualRateBps: 1000, PenaltyRateBps: 500, StartDate: start, DueDate: due, InterestMode: lending.ModeDealer, DealerID: "d-" + borrower})
	require.NoError(t, err)
	require.True(t, created)
	return l
}

// addItemTx does, in the caller's transaction, what close of business does
// for a loan that turns overdue, short of requesting the merge: the loan
// turns OVERDUE with daysPastDue and gets an open collection item.
func addItemTx(ctx context.Context, tx *db.Tx, loanID int64, daysPastDue int) error {
	if _, err := tx.Tx.Exec(ctx, `UPDATE loan SET status = 'OVERDUE', days_past_due = $2 WHERE id = $1`, loanID, daysPastDue); err != nil {
		return fmt.Errorf("mark loan overdue: %w", err)
	}
	if _, err := tx.Tx.Exec(ctx, `INSERT INTO collection_item (loan_id, borrower_id, opened_on)
		SELECT id, borrower_id, due_date + 1 FROM loan WHERE id = $1`, loanID); err != nil {
		return fmt.Errorf("insert item: %w", err)
	}
	return nil
}

// overdue is one writer of the merge protocol in its own transaction: the
// loan's item plus RequestMergesTx. It returns how many merges it created
// (1 when it created the borrower's signal, 0 when one was pending).
func (b *testBundle) overdue(ctx context.Context, l *lending.Loan, daysPastDue int) (int, error) {
	return db.InTxV(ctx, b.Store, func(tx *db.Tx) (int, error) {
		if err := addItemTx(ctx, tx, l.ID, daysPastDue); err != nil {
			return 0, err
		}
		return collection.RequestMergesTx(ctx, tx, []string{l.BorrowerID})
	})
}

// itemOnly commits an item with no signal and no job (a merge that never
// was requested, as the sweep must find).
func (b *testBundle) itemOnly(t *testing.T, l *lending.Loan, daysPastDue int) {
	t.Helper()
	require.NoError(t, b.Store.InTx(b.Ctx, func(tx *db.Tx) error { return addItemTx(b.Ctx, tx, l.ID, daysPastDue) }))
}

// settle waits until every open item is attached, no merge signal is left
// and every case.merge job has completed (or was cancelled by the test); a
// merge job that failed fails the test at once.
func (b *testBundle) settle(t *testing.T, timeout time.Duration) {
	t.Helper()
	testkit.WaitFor(t, timeout, "every item attached and every case.merge job completed", func() bool {
		failed := b.Count(t, `SELECT count(*) FROM river_job WHERE kind = 'case.merge' AND state IN ('retryable', 'discarded')`)
		if failed > 0 {
			var errs string
			require.NoError(t, b.DB.QueryRow(b.Ctx, `SELECT coalesce(string_agg(errors::text, '; '), '') FROM river_job WHERE kind = 'case.merge' AND state IN ('retryable', 'discarded')`).Scan(&errs))
			t.Fatalf("%d case.merge jobs failed: %s", failed, errs)
		}
		return b.Count(t, `SELECT count(*) FROM collection_item WHERE case_id IS NULL AND resolved_at IS NULL`) == 0 &&
			b.Count(t, `SELECT count(*) FROM collection_merge_signal`) == 0 &&
			b.Count(t, `SELECT count(*) FROM river_job WHERE kind = 'case.merge' AND state NOT IN ('completed', 'cancelled')`) == 0
	})
}

// requireInvariant checks SPEC §4 in SQL: every borrower of openItems has
// exactly one OPEN case holding exactly that many open items; no borrower
// has two OPEN cases; every open item is in its borrower's OPEN case (none
// unattached); no OPEN case is empty; and no borrower has a case that is
// not accounted for (closedCases more per borrower at most).
func (b *testBundle) requireInvariant(t *testing.T, openItems map[string]int) {
	t.Helper()
	require.Zero(t, b.Count(t, `SELECT count(*) FROM (SELECT borrower_id FROM collection_case WHERE status = 'OPEN' GROUP BY 1 HAVING count(*) > 1) d`),
		"a borrower has two OPEN cases")
	require.Zero(t, b.Count(t, `SELECT count(*) FROM collection_item WHERE resolved_at IS NULL AND case_id IS NULL`), "an open item is unattached")
	require.Zero(t, b.Count(t, `SELECT count(*) FROM collection_item i JOIN collection_case c ON c.id = i.case_id
		WHERE i.resolved_at IS NULL AND (c.status <> 'OPEN' OR c.borrower_id <> i.borrower_id)`), "an open item is in a closed case or another borrower's")
	require.Zero(t, b.Count(t, `SELECT count(*) FROM collection_case c WHERE c.status = 'OPEN'
		AND NOT EXISTS (SELECT 1 FROM collection_item i WHERE i.case_id = c.id AND i.resolved_at IS NULL)`), "an OPEN case holds no open item")
	require.Zero(t, b.Count(t, `SELECT count(*) FROM (SELECT loan_id FROM collection_item WHERE resolved_at IS NULL GROUP BY loan_id HAVING count(*) > 1) d`), "a loan is in two cases")
	for borrower, n := range openItems {
		require.EqualValues(t, 1, b.Count(t, `SELECT count(*) FROM collection_case WHERE borrower_id = $1 AND status = 'OPEN'`, borrower), borrower)
		require.EqualValues(t, n, b.Count(t, `SELECT count(*) FROM collection_item i JOIN collection_case c ON c.id = i.case_id
			WHERE c.borrower_id = $1 AND c.status = 'OPEN' AND i.resolved_at IS NULL`, borrower), borrower)
	}
}

// openCase returns the borrower's OPEN case id.
func (b *testBundle) openCase(t *testing.T, borrower string) int64 {
	t.Helper()
	var id int64
	require.NoError(t, b.DB.QueryRow(b.Ctx, `SELECT id FROM collection_case WHERE borrower_id = $1 AND status = 'OPEN'`, borrower).Scan(&id))
	return id
}

// caseOfLoan returns the case of the loan's open item (0 when unattached).
func (b *testBundle) caseOfLoan(t *testing.T, loanID int64) int64 {
	t.Helper()
	var id *int64
	require.NoError(t, b.DB.QueryRow(b.Ctx, `SELECT case_id FROM collection_item WHERE loan_id = $1 AND resolved_at IS NULL`, loanID).Scan(&id))
	if id == nil {
		return 0
	}
	return *id
}

// lockWaiters counts the sessions of this database waiting for a lock.
func (b *testBundle) lockWaiters(t *testing.T) int64 {
	t.Helper()
	return b.Count(t, `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE NOT l.granted AND a.datname = current_database()`)
}

// waitLockWaiters waits until n sessions wait for a lock.
func (b *testBundle) waitLockWaiters(t *testing.T, n int64, what string) {
	t.Helper()
	testkit.WaitFor(t, 10*time.Second, what, func() bool { return b.lockWaiters(t) >= n })
}

// runCOB closes the business dates from..through in order, each to
// COMPLETED (the workers must run).
func (b *testBundle) runCOB(t *testing.T, from, through string) {
	t.Helper()
	start, err := cob.ParseDate(from)
	require.NoError(t, err)
	end, err := cob.ParseDate(through)
	require.NoError(t, err)
	for d := start; !d.After(end); d = d.AddDate(0, 0, 1) {
		_, created, err := b.Services.COB.Start(b.Ctx, d)
		require.NoError(t, err)
		require.True(t, created, d)
		testkit.WaitFor(t, 20*time.Second, "run "+d.Format(cob.DateLayout), func() bool {
			r, err := b.Services.COB.Get(b.Ctx, d)
			require.NoError(t, err)
			require.NotEqual(t, db.CobRunStatusFAILED, r.Status)
			return r.Status == db.CobRunStatusCOMPLETED
		})
	}
}

// owed is everything a loan owes now (a DEALER loan: one DEALER repayment
// of this amount repays it).
func (b *testBundle) owed(t *testing.T, loanID int64) int64 {
	t.Helper()
	l, err := b.Services.Lending.GetLoan(b.Ctx, loanID)
	require.NoError(t, err)
	return l.PrincipalOutstandingMinor + l.InterestOutstandingDealerMinor + l.InterestOutstandingManufacturerMinor +
		l.PenaltyOutstandingMinor + l.LateFeeOutstandingMinor
}

// runConcurrently runs fn(0..n-1) in n goroutines released together and
// returns their errors.
func runConcurrently(n int, fn func(i int) error) []error {
	start := make(chan struct{})
	errs := make([]error, n)
	done := make(chan struct{})
	for i := range n {
		go func() {
			defer func() { done <- struct{}{} }()
			<-start
			errs[i] = fn(i)
		}()
	}
	close(start)
	for range n {
		<-done
	}
	return errs
}

func requireNoErrors(t *testing.T, errs []error) {
	t.Helper()
	for i, err := range errs {
		require.NoError(t, err, "goroutine %d", i)
	}
}
