package jobs_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/api"
	"riverbank/internal/config"
	"riverbank/internal/deadletter"
	"riverbank/internal/lending"
	"riverbank/internal/testkit"
	"riverbank/jobs"
)

// lendingJobsBundle is a database of the test's own with committed data,
// the services on it and the process's real River client (every worker),
// built but not started.
type lendingJobsBundle struct {
	*testkit.Bundle
	svc    *lending.Service
	client *river.Client[pgx.Tx]
}

func setupLendingJobs(t *testing.T, configure func(cfg *config.Config)) *lendingJobsBundle {
	t.Helper()
	k := testkit.DB(t, testkit.DBOptions{MaxConns: 12, Configure: configure})
	return &lendingJobsBundle{Bundle: k, svc: k.Services.Lending, client: k.Client(t, nil)}
}

func (b *lendingJobsBundle) putLine(t *testing.T, borrower string, limit int64, frozen bool) {
	t.Helper()
	_, _, err := b.svc.PutCreditLine(b.Ctx, lending.CreditLineInput{BorrowerID: borrower, LimitMinor: limit, Currency: "CNY", Frozen: frozen})
	require.NoError(t, err)
}

// loan grants a DEALER loan started in the past, so repayments can be
// value-dated between its start and today.
func (b *lendingJobsBundle) loan(t *testing.T, borrower, loanNo string, principal int64) *lending.Loan {
	t.Helper()
	l, created, err := b.svc.CreateLoan(b.Ctx, lending.LoanInput{LoanNo: loanNo, BorrowerID: borrower, Currency: "CNY", PrincipalMinor: principal,
		AnnualRateBps: 1200, PenaltyRateBps: 1800, LateFeeMinor: 500, StartDate: "2026-01-05", DueDate: "2026-07-05",
		InterestMode: lending.ModeDealer, DealerID: borrower})
	require.NoError(t, err)
	require.True(t, created)
	return l
}

func (b *lendingJobsBundle) repay(t *testing.T, loanID int64, identifier string, amount int64) *lending.Repayment {
	t.Helper()
	r, created, err := b.svc.Repay(b.Ctx, lending.RepaymentInput{LoanID: loanID, Identifier: identifier, Payer: "DEALER", AmountMinor: amount, ValueDate: "2026-02-01"})
	require.NoError(t, err)
	require.True(t, created)
	return r
}

func (b *lendingJobsBundle) used(t *testing.T, borrower string) int64 {
	t.Helper()
	return b.Count(t, "SELECT used_minor FROM credit_line WHERE borrower_id = $1", borrower)
}

func (b *lendingJobsBundle) jobState(t *testing.T, id int64) rivertype.JobState {
	t.Helper()
	row, err := b.client.JobGet(b.Ctx, id)
	require.NoError(t, err)
	return row.State
}

// TestCreditRestoreEndToEnd runs the real workers on the outbox: a
// repayment with principal gives it back to the credit line once, through
// the credit.restore job committed with the repayment; one without
// principal enqueues nothing.
func TestCreditRestoreEndToEnd(t *testing.T) {
	t.Parallel()
	b := setupLendingJobs(t, nil)
	b.putLine(t, "dealer-e2e", 10_000, false)
	l := b.loan(t, "dealer-e2e", "L-e2e", 1_000)
	_, err := b.Pool.Exec(b.Ctx, "UPDATE loan SET penalty_outstanding_minor = 50 WHERE id = $1", l.ID)
	require.NoError(t, err)
	b.repay(t, l.ID, "penalty-only", 50)
	r := b.repay(t, l.ID, "with-principal", 400)
	require.EqualValues(t, 400, r.PrincipalMinor)
	job := rivertest.RequireInserted(b.Ctx, t, riverpgxv5.New(b.Pool), &lending.RestoreArgs{RepaymentID: r.ID}, nil)
	require.Equal(t, r.ID, job.Args.RepaymentID, "one credit.restore, for the repayment with principal")
	require.EqualValues(t, 1_000, b.used(t, "dealer-e2e"), "nothing restored before the job runs")

	testkit.Start(t, b.client)
	testkit.WaitFor(t, 30*time.Second, "credit.restore to give the principal back", func() bool {
		return b.used(t, "dealer-e2e") == 600
	})
	testkit.WaitFor(t, 10*time.Second, "credit.restore to complete", func() bool {
		return b.jobState(t, job.ID) == rivertype.JobStateCompleted
	})
	require.EqualValues(t, 600, b.used(t, "dealer-e2e"))
	require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM credit_restoration"))
	require.EqualValues(t, 400, b.Count(t, "SELECT amount_minor FROM credit_restoration WHERE repayment_id = $1", r.ID))
}

// TestCreditRestoreDeadLetter is the dead-letter story of SPEC §6: a
// restoration against a frozen line retries with the configured backoff,
// is discarded after the configured attempts, is listed as a dead letter
// with every attempt's error, and, once the line is unfrozen and an
// operator retries it, restores the principal exactly once; retrying the
// completed job again is refused and restores nothing.
func TestCreditRestoreDeadLetter(t *testing.T) {
	t.Parallel()
	b := setupLendingJobs(t, func(cfg *config.Config) {
		cfg.CreditRestoreMaxAttempts = 2
		cfg.CreditRestoreBackoff = 50 * time.Millisecond
	})
	const borrower = "dealer-frozen"
	b.putLine(t, borrower, 10_000, false)
	l := b.loan(t, borrower, "L-dead", 1_000)
	b.putLine(t, borrower, 10_000, true)
	r := b.repay(t, l.ID, "pay-1", 400)
	job := rivertest.RequireInserted(b.Ctx, t, riverpgxv5.New(b.Pool), &lending.RestoreArgs{RepaymentID: r.ID},
		&rivertest.RequireInsertedOpts{MaxAttempts: 2})

	// Two attempts 50 ms apart (the worker's NextRetry, checked exactly in
	// TestCreditRestoreWorker), not River's default attempt⁴ seconds.
	testkit.Start(t, b.client)
	testkit.WaitFor(t, 30*time.Second, "credit.restore to be discarded", func() bool {
		return b.jobState(t, job.ID) == rivertype.JobStateDiscarded
	})
	require.EqualValues(t, 1_000, b.used(t, borrower), "a frozen line gets nothing back")
	require.Zero(t, b.Count(t, "SELECT count(*) FROM credit_restoration"))

	// Listed by the dead-letter service with every attempt's error.
	dls, err := b.Services.DeadLetters.List(b.Ctx, deadletter.ListParams{Kind: lending.KindCreditRestore})
	require.NoError(t, err)
	require.Len(t, dls, 1)
	dl := dls[0]
	require.Equal(t, job.ID, dl.ID)
	require.Equal(t, lending.KindCreditRestore, dl.Kind)
	require.Equal(t, "discarded", dl.State)
	require.Equal(t, 2, dl.Attempt)
	require.Equal(t, 2, dl.MaxAttempts)
	require.Len(t, dl.Errors, 2)
	for i, e := range dl.Errors {
		require.Equal(t, i+1, e.Attempt)
		require.Contains(t, e.Error, "frozen")
	}
	var args lending.RestoreArgs
	require.NoError(t, json.Unmarshal(dl.Args, &args))
	require.Equal(t, r.ID, args.RepaymentID)

	// And by the API, the same job.
	tapi := b.API(t)
	rec := tapi.Get("/v1/dead-letters?kind=" + lending.KindCreditRestore)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	listed := testkit.DecodeJSON[struct {
		DeadLetters []api.DeadLetterBody `json:"dead_letters"`
	}](t, rec)
	require.Len(t, listed.DeadLetters, 1)
	require.Equal(t, job.ID, listed.DeadLetters[0].ID)
	require.Equal(t, lending.KindCreditRestore, listed.DeadLetters[0].Kind)
	require.Equal(t, 2, listed.DeadLetters[0].Attempt)
	require.Len(t, listed.DeadLetters[0].Errors, 2)
	require.Contains(t, listed.DeadLetters[0].Errors[1].Error, "frozen")
	require.JSONEq(t, fmt.Sprintf(`{"repayment_id": %d}`, r.ID), string(listed.DeadLetters[0].Args))

	// Unfreeze, then retry the dead letter: restored exactly once.
	b.putLine(t, borrower, 10_000, false)
	retried, err := b.Services.DeadLetters.Retry(b.Ctx, job.ID)
	require.NoError(t, err)
	require.Equal(t, "available", retried.State)
	require.Nil(t, retried.DiscardedAt)
	testkit.WaitFor(t, 30*time.Second, "the retried credit.restore to complete", func() bool {
		return b.jobState(t, job.ID) == rivertype.JobStateCompleted
	})
	require.EqualValues(t, 600, b.used(t, borrower))
	require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM credit_restoration WHERE repayment_id = $1", r.ID))
	dls, err = b.Services.DeadLetters.List(b.Ctx, deadletter.ListParams{Kind: lending.KindCreditRestore})
	require.NoError(t, err)
	require.Empty(t, dls)

	// A completed job is not a dead letter: the service and the API refuse
	// to retry it, and nothing is restored twice.
	_, err = b.Services.DeadLetters.Retry(b.Ctx, job.ID)
	de := testkit.RequireCode(t, err, riverbank.ENOTDISCARDED)
	require.Equal(t, "completed", de.Details["state"])
	testkit.RequireProblem(t, tapi.Post(fmt.Sprintf("/v1/dead-letters/%d/retry", job.ID)), "not_discarded", http.StatusConflict)
	require.Equal(t, rivertype.JobStateCompleted, b.jobState(t, job.ID))
	// Even a run River might make of it again (at-least-once delivery)
	// restores nothing: the worker is idempotent per repayment.
	w := &jobs.CreditRestoreWorker{Lending: b.svc}
	require.NoError(t, w.Work(b.Ctx, &river.Job[lending.RestoreArgs]{JobRow: &rivertype.JobRow{ID: job.ID, Attempt: 4}, Args: lending.RestoreArgs{RepaymentID: r.ID}}))
	require.EqualValues(t, 600, b.used(t, borrower))
	require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM credit_restoration"))
}

// TestCreditRestoreWorker: a frozen line is a retryable error (not a
// cancel), an unknown repayment is cancelled, and the retry delay is the
// configured backoff doubling per attempt.
func TestCreditRestoreWorker(t *testing.T) {
	t.Parallel()
	b := setupLendingJobs(t, func(cfg *config.Config) { cfg.CreditRestoreBackoff = 50 * time.Millisecond })
	const borrower = "dealer-worker"
	b.putLine(t, borrower, 10_000, false)
	l := b.loan(t, borrower, "L-w", 1_000)
	r := b.repay(t, l.ID, "pay-1", 400)
	b.putLine(t, borrower, 10_000, true)
	w := &jobs.CreditRestoreWorker{Lending: b.svc}
	restore := func(id int64, attempt int) *river.Job[lending.RestoreArgs] {
		return &river.Job[lending.RestoreArgs]{JobRow: &rivertype.JobRow{ID: 1, Attempt: attempt, Kind: lending.KindCreditRestore}, Args: lending.RestoreArgs{RepaymentID: id}}
	}

	err := w.Work(b.Ctx, restore(r.ID, 1))
	require.ErrorIs(t, err, lending.ErrCreditLineFrozen)
	var cancel *river.JobCancelError
	require.False(t, errors.As(err, &cancel), "a frozen line is retried, not cancelled")
	require.EqualValues(t, 1_000, b.used(t, borrower))

	err = w.Work(b.Ctx, restore(1<<62, 1))
	require.True(t, errors.As(err, &cancel), "want a JobCancel error, got %v", err)

	for attempt, want := range map[int]time.Duration{1: 50 * time.Millisecond, 2: 100 * time.Millisecond, 5: 800 * time.Millisecond} {
		before := time.Now()
		next := w.NextRetry(restore(r.ID, attempt))
		require.WithinRange(t, next, before.Add(want), time.Now().Add(want), "attempt %d", attempt)
	}

	b.putLine(t, borrower, 10_000, false)
	require.NoError(t, w.Work(b.Ctx, restore(r.ID, 2)))
	require.NoError(t, w.Work(b.Ctx, restore(r.ID, 3)))
	require.EqualValues(t, 600, b.used(t, borrower))
}
