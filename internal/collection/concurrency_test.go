package collection_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/internal/collection"
	"riverbank/internal/db"
	"riverbank/internal/lending"
	"riverbank/internal/testkit"
)

// overdueLoans gives each of borrowers perBorrower loans, in borrower
// order per round so neighbouring goroutines hit different borrowers.
func overdueLoans(t *testing.T, b *testBundle, borrowers []string, perBorrower int) []*lending.Loan {
	t.Helper()
	for _, br := range borrowers {
		b.creditLine(t, br, "CNY")
	}
	var loans []*lending.Loan
	for i := range perBorrower {
		for _, br := range borrowers {
			loans = append(loans, b.loan(t, br, fmt.Sprintf("%s-L%02d", br, i), 100_000+int64(i)))
		}
	}
	return loans
}

func borrowerNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("b%d", i)
	}
	return out
}

// SPEC §4: at most one OPEN case per borrower under any concurrency, every
// overdue loan in exactly one case. 50 writers (10 loans of each of 5
// borrowers) commit their item and request a merge at once while the real
// River client works case.merge.
func TestConcurrentOverdueOneOpenCasePerBorrower(t *testing.T) {
	t.Parallel()
	b := setup(t, testkit.DBOptions{MaxConns: 40})
	borrowers := borrowerNames(5)
	loans := overdueLoans(t, b, borrowers, 10)
	b.startWorkers(t)

	var created atomic.Int64
	errs := runConcurrently(len(loans), func(i int) error {
		n, err := b.overdue(b.Ctx, loans[i], i%7+1)
		created.Add(int64(n))
		return err
	})
	requireNoErrors(t, errs)
	require.GreaterOrEqual(t, created.Load(), int64(len(borrowers)), "every borrower's first writer creates a merge")

	b.settle(t, 30*time.Second)
	want := map[string]int{}
	for _, br := range borrowers {
		want[br] = 10
	}
	b.requireInvariant(t, want)
	require.EqualValues(t, len(borrowers), b.Count(t, `SELECT count(*) FROM collection_case`), "no case was opened twice")
	require.EqualValues(t, created.Load(), b.Count(t, `SELECT count(*) FROM river_job WHERE kind = 'case.merge'`), "one job per signal created")
}

// The same race with merges run directly (as many case.merge jobs running
// at once would) while the writers commit. When the writers are done,
// every item a merge missed must have its borrower's signal and a merge job
// still to run — the protocol's promise — and running those jobs attaches
// everything.
func TestConcurrentOverdueWhileMergesRun(t *testing.T) {
	t.Parallel()
	b := setup(t, testkit.DBOptions{MaxConns: 48})
	borrowers := borrowerNames(5)
	loans := overdueLoans(t, b, borrowers, 10)

	const mergers = 8
	var writersDone atomic.Bool
	var merged atomic.Int64
	mergeErrs := make(chan error, mergers)
	for m := range mergers {
		go func() {
			var err error
			for i := 0; !writersDone.Load(); i++ {
				r, mErr := b.svc.Merge(b.Ctx, borrowers[(m+i)%len(borrowers)])
				if mErr != nil {
					err = mErr
					break
				}
				merged.Add(int64(r.Attached))
			}
			mergeErrs <- err
		}()
	}
	// The mergers stop when three quarters of the writers are done, so the
	// last writers' items are left to the jobs they queued.
	var finished atomic.Int64
	errs := runConcurrently(len(loans), func(i int) error {
		_, err := b.overdue(b.Ctx, loans[i], 1)
		if finished.Add(1) >= int64(len(loans)*3/4) {
			writersDone.Store(true)
		}
		return err
	})
	writersDone.Store(true)
	for range mergers {
		require.NoError(t, <-mergeErrs)
	}
	requireNoErrors(t, errs)

	// What the merges did not attach is promised to a job: its borrower has
	// a signal and an available case.merge job.
	rows, err := b.DB.Query(b.Ctx, `SELECT DISTINCT borrower_id FROM collection_item WHERE case_id IS NULL AND resolved_at IS NULL`)
	require.NoError(t, err)
	var pending []string
	for rows.Next() {
		var br string
		require.NoError(t, rows.Scan(&br))
		pending = append(pending, br)
	}
	require.NoError(t, rows.Err())
	for _, br := range pending {
		require.EqualValues(t, 1, b.Count(t, `SELECT count(*) FROM collection_merge_signal WHERE borrower_id = $1`, br), br)
		require.Positive(t, b.Count(t, `SELECT count(*) FROM river_job WHERE kind = 'case.merge' AND state = 'available' AND args->>'borrower_id' = $1`, br), br)
	}
	require.Zero(t, b.Count(t, `SELECT count(*) FROM (SELECT borrower_id FROM collection_case WHERE status = 'OPEN' GROUP BY 1 HAVING count(*) > 1) d`))
	t.Logf("direct merges attached %d of %d items; %d borrowers left to their jobs", merged.Load(), len(loans), len(pending))

	b.startWorkers(t)
	b.settle(t, 30*time.Second)
	want := map[string]int{}
	for _, br := range borrowers {
		want[br] = 10
	}
	b.requireInvariant(t, want)
	require.EqualValues(t, len(borrowers), b.Count(t, `SELECT count(*) FROM collection_case`))
}

// "The job's unique states must still allow a new merge to be queued while
// one runs." W2 requests a merge while W1's is pending (no new job: the
// signal exists); a merge M1 starts and must wait for W2's shared lock; W3
// arrives while M1 waits and queues behind it. When W2 commits, M1 attaches
// W1's and W2's items; W3 then finds the signal gone and queues a new job,
// which attaches its item.
func TestMergeQueuedWhileOneRunsStillRuns(t *testing.T) {
	t.Parallel()
	b := setup(t, testkit.DBOptions{})
	b.creditLine(t, "b", "CNY")
	l1, l2, l3 := b.loan(t, "b", "L1", 1000), b.loan(t, "b", "L2", 2000), b.loan(t, "b", "L3", 3000)
	ctx := b.Ctx

	n, err := b.overdue(ctx, l1, 1)
	require.NoError(t, err)
	require.Equal(t, 1, n, "W1 creates the signal and the job")

	w2, err := b.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = w2.Rollback(context.Background()) }()
	w2store := db.NewStore(w2, b.Inserter)
	require.NoError(t, w2store.InTx(ctx, func(tx *db.Tx) error {
		if err := addItemTx(ctx, tx, l2.ID, 1); err != nil {
			return err
		}
		n, err := collection.RequestMergesTx(ctx, tx, []string{"b"})
		if err == nil && n != 0 {
			err = fmt.Errorf("W2 created %d merges with a signal pending", n)
		}
		return err
	}))

	type result struct {
		n   int
		err error
	}
	m1 := make(chan result, 1)
	go func() {
		r, err := b.svc.Merge(ctx, "b")
		m1 <- result{r.Attached, err}
	}()
	b.waitLockWaiters(t, 1, "M1 to wait for W2's shared lock")

	w3 := make(chan result, 1)
	go func() {
		n, err := b.overdue(ctx, l3, 1)
		w3 <- result{n, err}
	}()
	b.waitLockWaiters(t, 2, "W3 to queue behind M1")
	select {
	case out := <-m1:
		t.Fatalf("M1 finished before W2 committed: %+v", out)
	case <-time.After(100 * time.Millisecond):
	}

	require.NoError(t, w2.Commit(ctx))
	out := <-m1
	require.NoError(t, out.err)
	require.Equal(t, 2, out.n, "M1 attaches W1's and W2's items")
	out = <-w3
	require.NoError(t, out.err)
	require.Equal(t, 1, out.n, "W3 finds M1's signal gone and queues a new merge")
	require.Zero(t, b.caseOfLoan(t, l3.ID), "W3 committed after M1's last look")

	// W1's job and W3's job: running them attaches W3's item.
	require.EqualValues(t, 2, b.Count(t, `SELECT count(*) FROM river_job WHERE kind = 'case.merge' AND state = 'available'`))
	b.startWorkers(t)
	b.settle(t, 20*time.Second)
	b.requireInvariant(t, map[string]int{"b": 3})
	c := b.openCase(t, "b")
	for _, l := range []*lending.Loan{l1, l2, l3} {
		require.Equal(t, c, b.caseOfLoan(t, l.ID))
	}
}

// Repaying every loan of a case at once (each repayment resolves its own
// item in its own transaction) closes the case exactly once; a loan of the
// same borrower that turns overdue later opens a new case.
func TestRepayAllLoansConcurrentlyClosesCaseOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, testkit.DBOptions{MaxConns: 32})
	b.creditLine(t, "b", "CNY")
	b.creditLine(t, "other", "CNY")
	var loans []*lending.Loan
	for i := range 10 {
		loans = append(loans, b.loan(t, "b", fmt.Sprintf("L%d", i), 1_000_000+int64(i)*1000))
	}
	otherLoan := b.loan(t, "other", "O1", 500_000)
	b.startWorkers(t)
	b.runCOB(t, "2026-01-01", "2026-01-03")
	b.settle(t, 20*time.Second)
	b.requireInvariant(t, map[string]int{"b": 10, "other": 1})
	caseID := b.openCase(t, "b")

	amounts := make([]int64, len(loans))
	for i, l := range loans {
		amounts[i] = b.owed(t, l.ID)
		require.Greater(t, amounts[i], l.PrincipalMinor, "interest and penalty accrued")
	}
	errs := runConcurrently(len(loans), func(i int) error {
		_, _, err := b.Services.Lending.Repay(b.Ctx, lending.RepaymentInput{LoanID: loans[i].ID, Identifier: "full", Payer: "DEALER", AmountMinor: amounts[i]})
		return err
	})
	requireNoErrors(t, errs)

	for _, l := range loans {
		got, err := b.Services.Lending.GetLoan(b.Ctx, l.ID)
		require.NoError(t, err)
		require.Equal(t, db.LoanStatusREPAID, got.Status)
	}
	c, err := b.svc.Get(b.Ctx, caseID)
	require.NoError(t, err)
	require.Equal(t, db.CollectionCaseStatusCLOSED, c.Status)
	require.NotNil(t, c.ClosedAt)
	require.Equal(t, *c.ClosedAt, c.UpdatedAt, "nothing touched the case after it closed")
	require.Zero(t, c.ItemCount)
	require.Empty(t, c.OverdueTotals)
	require.Len(t, c.Loans, 10)
	for _, l := range c.Loans {
		require.NotNil(t, l.ResolvedAt)
	}
	require.Zero(t, b.Count(t, `SELECT count(*) FROM collection_item WHERE borrower_id = 'b' AND resolved_at IS NULL`))
	require.EqualValues(t, 1, b.Count(t, `SELECT count(*) FROM collection_case WHERE borrower_id = 'b'`))
	b.requireInvariant(t, map[string]int{"other": 1})

	// A new loan of b turns overdue after the case closed: a new case.
	late := b.loanDated(t, "b", "L-late", 300_000, "2026-01-04", "2026-01-05")
	b.runCOB(t, "2026-01-04", "2026-01-06")
	b.settle(t, 20*time.Second)
	b.requireInvariant(t, map[string]int{"b": 1, "other": 1})
	newCase := b.openCase(t, "b")
	require.NotEqual(t, caseID, newCase)
	require.Equal(t, newCase, b.caseOfLoan(t, late.ID))
	c, err = b.svc.Get(b.Ctx, caseID)
	require.NoError(t, err)
	require.Equal(t, db.CollectionCaseStatusCLOSED, c.Status, "the closed case stays closed")
	require.Len(t, c.Loans, 10)
	require.Equal(t, b.openCase(t, "other"), b.caseOfLoan(t, otherLoan.ID))
}

// Items added, merged and resolved all at once: whatever interleaving,
// every open item ends in its borrower's one OPEN case and no OPEN case is
// left without an open item.
func TestConcurrentOverdueMergeAndResolve(t *testing.T) {
	t.Parallel()
	b := setup(t, testkit.DBOptions{MaxConns: 48})
	borrowers := borrowerNames(3)
	loans := overdueLoans(t, b, borrowers, 12)
	b.startWorkers(t)

	// Writers for every loan; every fourth loan is resolved right after
	// its item commits (repaid while its merge may be running), and direct
	// merges race with both.
	var writersDone atomic.Bool
	mergeErr := make(chan error, 1)
	go func() {
		for i := 0; !writersDone.Load(); i++ {
			if _, err := b.svc.Merge(b.Ctx, borrowers[i%len(borrowers)]); err != nil {
				mergeErr <- err
				return
			}
		}
		mergeErr <- nil
	}()
	errs := runConcurrently(len(loans), func(i int) error {
		if _, err := b.overdue(b.Ctx, loans[i], 1); err != nil {
			return err
		}
		if i%4 != 0 {
			return nil
		}
		return b.Store.InTx(b.Ctx, func(tx *db.Tx) error {
			_, err := collection.ResolveLoansTx(b.Ctx, tx, []int64{loans[i].ID})
			return err
		})
	})
	writersDone.Store(true)
	require.NoError(t, <-mergeErr)
	requireNoErrors(t, errs)

	b.settle(t, 30*time.Second)
	want := map[string]int{}
	for i, l := range loans {
		if i%4 != 0 {
			want[l.BorrowerID]++
		}
	}
	b.requireInvariant(t, want)
}
