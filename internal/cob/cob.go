// Package cob is riverbank's close of business (SPEC §7): the daily run
// that accrues interest, penalty and late fees for every open loan, finds
// the loans that became overdue and sends them to collection. A run for a
// business date fans out, in the transaction that starts it, into chunk
// jobs over fixed loan-id ranges; each chunk closes its loans with one
// set-based function (cob_close_loans in schema.sql) guarded by the loan's
// last closed date, so every (loan, date) is processed exactly once, posts
// one aggregated ledger entry per kind and currency, and counts itself in
// the database. The chunk that finishes the run closes it and enqueues
// the trial balance. Runs are sequential; the periodic scheduler closes
// every open date up to yesterday in order (the catch-up after downtime).
package cob

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/events"
	"riverbank/internal/lending"
	"riverbank/internal/queue"
)

// Job kinds.
const (
	KindChunk         = "cob.chunk"
	KindTrialBalance  = "cob.trial_balance"
	KindRetryFailures = "cob.retry_failures"
	KindSchedule      = "cob.schedule"
)

// DefaultChunkSize is how many loan ids one chunk covers. Measured with
// `riverbank bench cob` (docs/benchmarks.md, 1M loans on 2 cores): large
// enough that a chunk's fixed costs (job, transaction, ledger entries,
// the run's shared counter rows) stop mattering — 1,000 cost ~60% more CPU
// per date than 5,000 and 2,000 15-40% more; 10,000 was no cheaper and
// left fewer chunks to spread — and small enough that a chunk holds its row
// locks for well under a second on an idle machine and a failed chunk's
// loan-by-loan retry stays short.
const DefaultChunkSize = 5000

// DateLayout is the wire format of business dates.
const DateLayout = lending.DateLayout

// noDate is what the bookkeeping queries return for "none".
var noDate = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)

// ChunkArgs are the args of cob.chunk: close date Date for the loans with
// ids in [Lo, Hi).
type ChunkArgs struct {
	Date  string `json:"date"`
	Chunk int    `json:"chunk"`
	Lo    int64  `json:"lo"`
	Hi    int64  `json:"hi"`
}

// Kind implements river.JobArgs.
func (ChunkArgs) Kind() string { return KindChunk }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (ChunkArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: queue.COB, MaxAttempts: 10, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// TrialBalanceArgs are the args of cob.trial_balance: check a closed
// run's ledger and sub-ledger and store the result on the run.
type TrialBalanceArgs struct {
	Date string `json:"date"`
}

// Kind implements river.JobArgs.
func (TrialBalanceArgs) Kind() string { return KindTrialBalance }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (TrialBalanceArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: queue.COB, MaxAttempts: 10, UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: liveStates}}
}

// RetryFailuresArgs are the args of cob.retry_failures: re-run the failed
// loans of a run.
type RetryFailuresArgs struct {
	Date string `json:"date"`
}

// Kind implements river.JobArgs.
func (RetryFailuresArgs) Kind() string { return KindRetryFailures }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (RetryFailuresArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: queue.COB, MaxAttempts: 5, UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: liveStates}}
}

// ScheduleArgs are the args of the periodic cob.schedule.
type ScheduleArgs struct{}

// Kind implements river.JobArgs.
func (ScheduleArgs) Kind() string { return KindSchedule }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (ScheduleArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: queue.Maintenance, MaxAttempts: 3}
}

// liveStates makes a job unique while it has not finished, so it can run
// again later (a second retry of a run's failures, a new trial balance).
var liveStates = []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRetryable,
	rivertype.JobStateRunning, rivertype.JobStateScheduled,
}

// Options configure the service.
type Options struct {
	Logger *slog.Logger
	// BusinessTZ is the zone of business dates (UTC when nil).
	BusinessTZ *time.Location
	// LateFeeDay is the day of month late fees are charged (default 20).
	LateFeeDay int
	// ChunkSize is how many loan ids a chunk covers (DefaultChunkSize).
	ChunkSize int
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Service starts, works and reads close-of-business runs.
type Service struct {
	store      *db.Store
	logger     *slog.Logger
	tz         *time.Location
	lateFeeDay int
	chunkSize  int
	now        func() time.Time
}

// NewService returns a close-of-business service on store.
func NewService(store *db.Store, opts Options) *Service {
	s := &Service{store: store, logger: opts.Logger, tz: opts.BusinessTZ, lateFeeDay: opts.LateFeeDay, chunkSize: opts.ChunkSize, now: opts.Now}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.tz == nil {
		s.tz = time.UTC
	}
	if s.lateFeeDay < 1 || s.lateFeeDay > 28 {
		s.lateFeeDay = 20
	}
	if s.chunkSize <= 0 {
		s.chunkSize = DefaultChunkSize
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s
}

// Today is the current business date.
func (s *Service) Today() time.Time {
	y, m, d := s.now().In(s.tz).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// ParseDate parses a YYYY-MM-DD business date (lending's parser: one rule
// for every date the API takes).
func ParseDate(v string) (time.Time, error) { return lending.ParseDate("date", v) }

func fmtDate(t time.Time) string { return t.Format(DateLayout) }

func dateNotOpen(first time.Time, format string, args ...any) error {
	return riverbank.Errorf(riverbank.EDATENOTOPEN, format, args...).WithDetail("first_open_date", fmtDate(first))
}

// Totals is what a run accrued in one currency.
type Totals struct {
	Currency                  string
	InterestDealerMinor       int64
	InterestManufacturerMinor int64
	PenaltyMinor              int64
	LateFeeMinor              int64
}

// FailedLoan is a loan a run could not close, with why.
type FailedLoan struct {
	LoanID   int64
	Error    string
	FailedAt time.Time
}

// Run is a close-of-business run with its totals and failed loans.
type Run struct {
	db.CobRun
	Totals      []Totals
	FailedLoans []FailedLoan
}

// FirstOpenDate is the next business date a run may start for: the day
// after the last closed date, else (before any run) the earliest loan
// start date; ok is false when there is nothing to close yet (no runs, no
// loans). A run that is not closed (RUNNING or FAILED) is itself the first
// open date.
func FirstOpenDate(ctx context.Context, q *db.Queries) (time.Time, bool, error) {
	open, err := q.OpenRun(ctx)
	if err == nil {
		return open.BusinessDate, true, nil
	}
	if !db.IsNotFound(err) {
		return time.Time{}, false, fmt.Errorf("read open run: %w", err)
	}
	last, err := q.LastClosedDate(ctx)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read last closed date: %w", err)
	}
	if !last.Equal(noDate) {
		return last.AddDate(0, 0, 1), true, nil
	}
	first, err := q.MinLoanStartDate(ctx)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("read first loan start: %w", err)
	}
	if first.Equal(noDate) {
		return time.Time{}, false, nil
	}
	return first, true, nil
}

// Start starts the run for date (created=true), or returns the run that
// exists for it (a closed date is not re-run: nothing changes). Runs are
// sequential: date must be the first open date (else 409 date_not_open
// naming it) and must be over (before today in the business time zone,
// else 422).
func (s *Service) Start(ctx context.Context, date time.Time) (*Run, bool, error) {
	var (
		run     *Run
		created bool
	)
	err := s.store.InTx(ctx, func(tx *db.Tx) error {
		var err error
		run, created, err = s.startTx(ctx, tx, date, nil)
		return err
	})
	return run, created, err
}

func (s *Service) startTx(ctx context.Context, tx *db.Tx, date time.Time, catchUp *time.Time) (*Run, bool, error) {
	if today := s.Today(); !date.Before(today) {
		return nil, false, riverbank.Errorf(riverbank.EINVALID, "business date %s is not over yet (today is %s in the business time zone): only past dates can be closed", fmtDate(date), fmtDate(today)).WithDetail("field", "date")
	}
	// Waits for loan creations in flight; new ones then see this run.
	if err := tx.LockCOBDatesExclusive(ctx); err != nil {
		return nil, false, fmt.Errorf("lock business dates: %w", err)
	}
	existing, err := tx.GetCOBRun(ctx, date)
	if err == nil {
		r, err := loadRun(ctx, tx.Queries, existing)
		return r, false, err
	}
	if !db.IsNotFound(err) {
		return nil, false, fmt.Errorf("read run: %w", err)
	}
	first, ok, err := FirstOpenDate(ctx, tx.Queries)
	if err != nil {
		return nil, false, err
	}
	if ok && !date.Equal(first) {
		if date.Before(first) {
			return nil, false, dateNotOpen(first, "business date %s is closed (no loan was open then); the first open date is %s", fmtDate(date), fmtDate(first))
		}
		return nil, false, dateNotOpen(first, "business date %s cannot close before %s: runs are sequential", fmtDate(date), fmtDate(first))
	}
	rng, err := tx.COBEligibleRange(ctx, date)
	if err != nil {
		return nil, false, fmt.Errorf("count open loans: %w", err)
	}
	chunks := 0
	if rng.Loans > 0 {
		chunks = int((rng.IDHi - rng.IDLo + int64(s.chunkSize)) / int64(s.chunkSize))
	}
	status := db.CobRunStatusRUNNING
	if chunks == 0 {
		status = db.CobRunStatusCOMPLETED
	}
	row, err := tx.InsertCOBRun(ctx, db.InsertCOBRunParams{
		BusinessDate: date, LateFeeDay: int32(s.lateFeeDay), IDLo: rng.IDLo, IDHi: rng.IDHi, ChunkSize: int32(s.chunkSize),
		ChunksTotal: int32(chunks), LoansTotal: rng.Loans, CatchUpThrough: catchUp, Status: status,
	})
	if err != nil {
		return nil, false, fmt.Errorf("insert run: %w", err)
	}
	params := make([]river.InsertManyParams, 0, chunks)
	for i := range chunks {
		lo := rng.IDLo + int64(i)*int64(s.chunkSize)
		params = append(params, river.InsertManyParams{Args: ChunkArgs{Date: fmtDate(date), Chunk: i, Lo: lo, Hi: min(lo+int64(s.chunkSize), rng.IDHi+1)}})
	}
	if _, err := tx.InsertMany(ctx, params); err != nil {
		return nil, false, err
	}
	if status == db.CobRunStatusCOMPLETED {
		if err := s.closedTx(ctx, tx, row); err != nil {
			return nil, false, err
		}
	}
	return &Run{CobRun: row, Totals: []Totals{}, FailedLoans: []FailedLoan{}}, true, nil
}

// closedTx is what follows a run's completion in the same transaction:
// the trial balance job, and the next date of a catch-up.
func (s *Service) closedTx(ctx context.Context, tx *db.Tx, run db.CobRun) error {
	if _, err := tx.Insert(ctx, TrialBalanceArgs{Date: fmtDate(run.BusinessDate)}, nil); err != nil {
		return err
	}
	full, err := loadRun(ctx, tx.Queries, run)
	if err != nil {
		return err
	}
	if err := events.AppendTx(ctx, tx, events.COBRunCompleted, "cob_run", fmtDate(run.BusinessDate), full); err != nil {
		return err
	}
	if run.CatchUpThrough != nil && run.CatchUpThrough.After(run.BusinessDate) {
		next := run.BusinessDate.AddDate(0, 0, 1)
		if _, _, err := s.startTx(ctx, tx, next, run.CatchUpThrough); err != nil {
			return fmt.Errorf("start catch-up run %s: %w", fmtDate(next), err)
		}
	}
	return nil
}

func loadRun(ctx context.Context, q *db.Queries, r db.CobRun) (*Run, error) {
	out := &Run{CobRun: r, Totals: []Totals{}, FailedLoans: []FailedLoan{}}
	ts, err := q.COBRunTotals(ctx, r.BusinessDate)
	if err != nil {
		return nil, fmt.Errorf("read run totals: %w", err)
	}
	for _, t := range ts {
		out.Totals = append(out.Totals, Totals{Currency: t.Currency, InterestDealerMinor: t.InterestDealerMinor,
			InterestManufacturerMinor: t.InterestManufacturerMinor, PenaltyMinor: t.PenaltyMinor, LateFeeMinor: t.LateFeeMinor})
	}
	fs, err := q.FailedLoans(ctx, db.FailedLoansParams{BusinessDate: r.BusinessDate, Lim: 500})
	if err != nil {
		return nil, fmt.Errorf("read failed loans: %w", err)
	}
	for _, f := range fs {
		out.FailedLoans = append(out.FailedLoans, FailedLoan{LoanID: f.LoanID, Error: f.Error, FailedAt: f.FailedAt})
	}
	return out, nil
}

// Get returns the run of a date.
func (s *Service) Get(ctx context.Context, date time.Time) (*Run, error) {
	q := s.store.Queries()
	r, err := q.GetCOBRun(ctx, date)
	if db.IsNotFound(err) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "no close-of-business run for %s", fmtDate(date))
	}
	if err != nil {
		return nil, fmt.Errorf("get run: %w", err)
	}
	return loadRun(ctx, q, r)
}

// List returns runs newest first, before the date given (zero: from the
// newest).
func (s *Service) List(ctx context.Context, before time.Time, limit int) ([]*Run, error) {
	if before.IsZero() {
		before = time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)
	}
	q := s.store.Queries()
	rows, err := q.ListCOBRuns(ctx, db.ListCOBRunsParams{Before: before, Lim: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	out := make([]*Run, len(rows))
	for i, r := range rows {
		if out[i], err = loadRun(ctx, q, r); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// RetryFailures re-runs the failed loans of a FAILED run: the run turns
// RUNNING and cob.retry_failures works the loans one by one. A run that is
// not FAILED is 409 conflict.
func (s *Service) RetryFailures(ctx context.Context, date time.Time) (*Run, error) {
	var out *Run
	err := s.store.InTx(ctx, func(tx *db.Tx) error {
		r, err := tx.LockCOBRun(ctx, date)
		if db.IsNotFound(err) {
			return riverbank.Errorf(riverbank.ENOTFOUND, "no close-of-business run for %s", fmtDate(date))
		}
		if err != nil {
			return fmt.Errorf("lock run: %w", err)
		}
		if r.Status != db.CobRunStatusFAILED {
			return riverbank.Errorf(riverbank.ECONFLICT, "the run for %s is %s: only a FAILED run's loans can be retried", fmtDate(date), r.Status).WithDetail("status", string(r.Status))
		}
		if r, err = tx.SetCOBRunStatus(ctx, db.SetCOBRunStatusParams{BusinessDate: date, Status: db.CobRunStatusRUNNING}); err != nil {
			return fmt.Errorf("set run running: %w", err)
		}
		if _, err := tx.Insert(ctx, RetryFailuresArgs{Date: fmtDate(date)}, nil); err != nil {
			return err
		}
		out, err = loadRun(ctx, tx.Queries, r)
		return err
	})
	return out, err
}

// Schedule is the periodic catch-up: it closes every open date up to
// yesterday, in order. It starts the first open date with the catch-up
// target stored on the run (each completed run starts the next in its
// completing transaction), or, when a run is already RUNNING, extends that
// run's target. A FAILED run waits for an operator (retry-failures).
func (s *Service) Schedule(ctx context.Context) (*time.Time, error) {
	var started *time.Time
	err := s.store.InTx(ctx, func(tx *db.Tx) error {
		yesterday := s.Today().AddDate(0, 0, -1)
		open, err := tx.OpenRun(ctx)
		if err == nil {
			if open.Status == db.CobRunStatusRUNNING {
				return tx.ExtendCatchUp(ctx, db.ExtendCatchUpParams{BusinessDate: open.BusinessDate, CatchUpThrough: yesterday})
			}
			s.logger.WarnContext(ctx, "close of business waits for a failed run", "date", fmtDate(open.BusinessDate), "loans_failed", open.LoansFailed)
			return nil
		}
		if !db.IsNotFound(err) {
			return fmt.Errorf("read open run: %w", err)
		}
		first, ok, err := FirstOpenDate(ctx, tx.Queries)
		if err != nil || !ok || first.After(yesterday) {
			return err
		}
		if _, _, err := s.startTx(ctx, tx, first, &yesterday); err != nil {
			return err
		}
		started = &first
		return nil
	})
	return started, err
}
