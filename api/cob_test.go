package api_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2/humatest"
	"github.com/stretchr/testify/require"

	"riverbank/api"
	"riverbank/internal/lending"
	"riverbank/internal/testkit"
)

// cobAPIBundle is the API on a database of the test's own: runs are global
// (sequential business dates over every loan) and a run's start takes the
// business-date lock that loan creations hold, so COB tests do not share a
// database with other tests' open transactions.
type cobAPIBundle struct {
	*testkit.Bundle
	api humatest.TestAPI
	// workers is set once the River client runs (startWorkers): from then
	// on workers insert jobs of their own (periodic sweeps, ledger
	// application), so only the kinds a request could insert are counted.
	workers bool
}

// startWorkers runs the process's River client until the test ends.
func (b *cobAPIBundle) startWorkers(t *testing.T) {
	t.Helper()
	testkit.Start(t, b.Client(t, nil))
	b.workers = true
}

func setupCOBAPI(t *testing.T) *cobAPIBundle {
	t.Helper()
	k := testkit.DB(t, testkit.DBOptions{})
	return &cobAPIBundle{Bundle: k, api: k.API(t)}
}

// cobLoan creates a DEALER loan in CNY (with its credit line).
func (b *cobAPIBundle) cobLoan(t *testing.T, borrower, loanNo string, principal int64, start, due string) *lending.Loan {
	t.Helper()
	_, _, err := b.Services.Lending.PutCreditLine(b.Ctx, lending.CreditLineInput{BorrowerID: borrower, LimitMinor: 1_000_000_000_000, Currency: "CNY"})
	require.NoError(t, err)
	l, created, err := b.Services.Lending.CreateLoan(b.Ctx, lending.LoanInput{LoanNo: loanNo, BorrowerID: borrower, Currency: "CNY", PrincipalMinor: principal,
		AnnualRateBps: 1000, PenaltyRateBps: 500, StartDate: start, DueDate: due, InterestMode: lending.ModeDealer, DealerID: "d-" + borrower})
	require.NoError(t, err)
	require.True(t, created)
	return l
}

// cobWrites counts what a run or case request may write: runs, cases and
// River jobs — every job while no worker runs, else the kinds a request or
// a case merge inserts (not the periodic and ledger jobs that running
// workers insert on their own).
type cobWrites struct {
	Runs, Cases, Jobs int64
}

func (b *cobAPIBundle) writes(t *testing.T) cobWrites {
	t.Helper()
	jobs := `SELECT count(*) FROM river_job`
	if b.workers {
		jobs += ` WHERE kind IN ('cob.chunk', 'cob.trial_balance', 'cob.retry_failures', 'case.merge')`
	}
	return cobWrites{
		Runs:  b.Count(t, `SELECT count(*) FROM cob_run`),
		Cases: b.Count(t, `SELECT count(*) FROM collection_case`),
		Jobs:  b.Count(t, jobs),
	}
}

// startRun PUTs a run and checks the status.
func (b *cobAPIBundle) startRun(t *testing.T, date string, status int) api.COBRunBody {
	t.Helper()
	rec := b.api.Put("/v1/cob-runs/" + date)
	require.Equal(t, status, rec.Code, rec.Body.String())
	return testkit.DecodeJSON[api.COBRunBody](t, rec)
}

// closeDates starts and waits for every run from..through (workers must
// run, unless there are no loans).
func (b *cobAPIBundle) closeDates(t *testing.T, from, through string) {
	t.Helper()
	start, err := time.Parse("2006-01-02", from)
	require.NoError(t, err)
	end, err := time.Parse("2006-01-02", through)
	require.NoError(t, err)
	for d := start; !d.After(end); d = d.AddDate(0, 0, 1) {
		date := d.Format("2006-01-02")
		b.startRun(t, date, http.StatusAccepted)
		testkit.WaitFor(t, 20*time.Second, "run "+date, func() bool {
			rec := b.api.Get("/v1/cob-runs/" + date)
			require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
			r := testkit.DecodeJSON[api.COBRunBody](t, rec)
			require.NotEqual(t, "FAILED", r.Status)
			return r.Status == "COMPLETED"
		})
	}
}

// PUT starts a run (202) in one transaction with its chunk jobs; the same
// date again returns that run (200) and writes nothing.
func TestCOBAPIStartIsIdempotentPerDate(t *testing.T) {
	t.Parallel()
	b := setupCOBAPI(t)
	b.cobLoan(t, "b1", "L1", 36_500_000, "2026-01-01", "2026-01-10")
	before := b.writes(t)

	run := b.startRun(t, "2026-01-01", http.StatusAccepted)
	require.Equal(t, "2026-01-01", run.Date)
	require.Equal(t, "RUNNING", run.Status, "no worker runs its chunks")
	require.EqualValues(t, 1, run.LoansTotal)
	require.EqualValues(t, 1, run.ChunksTotal)
	require.Zero(t, run.LoansDone)
	require.NotNil(t, run.Totals)
	require.NotNil(t, run.FailedLoans)
	require.Nil(t, run.TrialBalance)
	after := b.writes(t)
	require.Equal(t, before.Runs+1, after.Runs)
	require.Equal(t, before.Jobs+1, after.Jobs, "one job, the chunk, in the run's transaction")
	require.EqualValues(t, 1, b.Count(t, `SELECT count(*) FROM river_job WHERE kind = 'cob.chunk' AND args->>'date' = '2026-01-01'`))

	again := b.startRun(t, "2026-01-01", http.StatusOK)
	require.Equal(t, run.Date, again.Date)
	require.Equal(t, run.StartedAt, again.StartedAt)
	require.Equal(t, after, b.writes(t))

	rec := b.api.Get("/v1/cob-runs/2026-01-01")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	got := testkit.DecodeJSON[map[string]any](t, rec)
	for _, k := range []string{"date", "status", "loans_total", "loans_done", "loans_failed", "chunks_total", "chunks_done", "totals", "failed_loans", "trial_balance", "started_at"} {
		require.Contains(t, got, k)
	}
	require.Nil(t, got["trial_balance"])

	// The run completes with the workers: 200 again, COMPLETED, totals.
	b.startWorkers(t)
	testkit.WaitFor(t, 20*time.Second, "the run to complete", func() bool {
		return testkit.DecodeJSON[api.COBRunBody](t, b.api.Get("/v1/cob-runs/2026-01-01")).Status == "COMPLETED"
	})
	done := b.startRun(t, "2026-01-01", http.StatusOK)
	require.Equal(t, "COMPLETED", done.Status)
	require.EqualValues(t, 1, done.LoansDone)
	require.Equal(t, []api.COBTotalsBody{{Currency: "CNY", InterestDealerMinor: 10_000}}, done.Totals)
	require.NotNil(t, done.CompletedAt)
}

// Runs are sequential: a date after the first open date is 409
// date_not_open naming it, and so is a date before it (closed, or before
// any loan); nothing is written.
func TestCOBAPIDateNotOpen(t *testing.T) {
	t.Parallel()
	b := setupCOBAPI(t)
	b.cobLoan(t, "b1", "L1", 1_000_000, "2026-01-05", "2026-02-05")
	before := b.writes(t)

	for _, date := range []string{"2026-01-06", "2026-01-04", "2025-12-31"} {
		rec := b.api.Put("/v1/cob-runs/" + date)
		p := testkit.RequireProblem(t, rec, "date_not_open", http.StatusConflict)
		require.Equal(t, "2026-01-05", p.Details["first_open_date"], date)
		require.Equal(t, before, b.writes(t), date)
	}

	// While 01-05 runs (no workers), it is itself the first open date.
	b.startRun(t, "2026-01-05", http.StatusAccepted)
	mid := b.writes(t)
	rec := b.api.Put("/v1/cob-runs/2026-01-06")
	p := testkit.RequireProblem(t, rec, "date_not_open", http.StatusConflict)
	require.Equal(t, "2026-01-05", p.Details["first_open_date"])
	require.Equal(t, mid, b.writes(t))
}

// A malformed date and a date that is not over yet are 422 on every run
// operation; nothing is written.
func TestCOBAPIBadDates(t *testing.T) {
	t.Parallel()
	b := setupCOBAPI(t)
	b.cobLoan(t, "b1", "L1", 1_000_000, "2026-01-05", "2026-02-05")
	before := b.writes(t)
	today := b.Services.COB.Today()

	for _, date := range []string{"2026-13-01", "2026-02-30", "20260105", "2026-1-5", "yesterday", "0000-01-01", "2026-01-05T00:00:00Z", " 2026-01-05"} {
		for _, req := range []func() *httptest.ResponseRecorder{
			func() *httptest.ResponseRecorder { return b.api.Put("/v1/cob-runs/" + url.PathEscape(date)) },
			func() *httptest.ResponseRecorder { return b.api.Get("/v1/cob-runs/" + url.PathEscape(date)) },
			func() *httptest.ResponseRecorder {
				return b.api.Post("/v1/cob-runs/" + url.PathEscape(date) + "/retry-failures")
			},
		} {
			testkit.RequireProblem(t, req(), "validation_failed", http.StatusUnprocessableEntity)
		}
		require.Equal(t, before, b.writes(t), date)
	}
	for _, d := range []time.Time{today, today.AddDate(0, 0, 1), today.AddDate(1, 0, 0)} {
		rec := b.api.Put("/v1/cob-runs/" + d.Format("2006-01-02"))
		p := testkit.RequireProblem(t, rec, "validation_failed", http.StatusUnprocessableEntity)
		require.Equal(t, "date", p.Details["field"])
		require.Equal(t, before, b.writes(t))
	}
}

// GET of a date without a run is 404; retry-failures is 404 for it and 409
// for a run that is not FAILED; nothing is written.
func TestCOBAPIGetAndRetryErrors(t *testing.T) {
	t.Parallel()
	b := setupCOBAPI(t)
	testkit.RequireProblem(t, b.api.Get("/v1/cob-runs/2026-01-01"), "not_found", http.StatusNotFound)
	testkit.RequireProblem(t, b.api.Post("/v1/cob-runs/2026-01-01/retry-failures"), "not_found", http.StatusNotFound)

	// No loans: the run has no chunk and completes at once.
	run := b.startRun(t, "2026-01-01", http.StatusAccepted)
	require.Equal(t, "COMPLETED", run.Status)
	require.Zero(t, run.ChunksTotal)
	before := b.writes(t)
	p := testkit.RequireProblem(t, b.api.Post("/v1/cob-runs/2026-01-01/retry-failures"), "conflict", http.StatusConflict)
	require.Equal(t, "COMPLETED", p.Details["status"])
	require.Equal(t, before, b.writes(t))
	testkit.RequireProblem(t, b.api.Get("/v1/cob-runs/2026-01-02"), "not_found", http.StatusNotFound)

	// A RUNNING run is not FAILED either.
	b.cobLoan(t, "b1", "L1", 1_000_000, "2026-01-02", "2026-02-02")
	b.startRun(t, "2026-01-02", http.StatusAccepted)
	before = b.writes(t)
	p = testkit.RequireProblem(t, b.api.Post("/v1/cob-runs/2026-01-02/retry-failures"), "conflict", http.StatusConflict)
	require.Equal(t, "RUNNING", p.Details["status"])
	require.Equal(t, before, b.writes(t))
}

// GET /v1/cob-runs lists runs newest first in keyset pages; a bad cursor or
// limit is 422.
func TestCOBAPIListRuns(t *testing.T) {
	t.Parallel()
	b := setupCOBAPI(t)
	// No loans: every run completes at once, so dates close in order.
	b.closeDates(t, "2026-01-01", "2026-01-05")

	type page struct {
		Runs       []api.COBRunBody `json:"runs"`
		NextCursor string           `json:"next_cursor"`
	}
	var dates []string
	path := "/v1/cob-runs?limit=2"
	for range 5 {
		rec := b.api.Get(path)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		p := testkit.DecodeJSON[page](t, rec)
		for _, r := range p.Runs {
			require.Equal(t, "COMPLETED", r.Status)
			dates = append(dates, r.Date)
		}
		if p.NextCursor == "" {
			break
		}
		path = "/v1/cob-runs?limit=2&cursor=" + url.QueryEscape(p.NextCursor)
	}
	require.Equal(t, []string{"2026-01-05", "2026-01-04", "2026-01-03", "2026-01-02", "2026-01-01"}, dates)

	all := testkit.DecodeJSON[page](t, b.api.Get("/v1/cob-runs"))
	require.Len(t, all.Runs, 5)
	require.Empty(t, all.NextCursor)

	for _, q := range []string{"cursor=bm9wZQ", "cursor=%21%21", "limit=0", "limit=501", "limit=x"} {
		testkit.RequireProblem(t, b.api.Get("/v1/cob-runs?"+q), "validation_failed", http.StatusUnprocessableEntity)
	}
}
