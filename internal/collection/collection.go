// Package collection keeps collection cases (SPEC §4): a loan that turns
// overdue gets a collection item in the transaction that finds it overdue
// (close of business), and case.merge attaches every unattached item of a
// borrower to the borrower's one OPEN case under a per-borrower lock — the
// merge at overdue time that replaces seed 000's nightly scan of every
// loan. A loan repaid or no longer overdue resolves its item in its own
// transaction, and the case closes with its last item.
package collection

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/riverqueue/river"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/events"
	"riverbank/internal/queue"
)

// Kinds of the collection jobs.
const (
	KindMerge = "case.merge"
	KindSweep = "case.sweep"
)

// MergeArgs are the args of case.merge: attach a borrower's unattached
// items to its open case. Not unique in River (whose unique states must
// include running): collection_merge_signal is the uniqueness, released by
// the job's own transaction, so a merge requested while one runs still
// runs.
type MergeArgs struct {
	BorrowerID string `json:"borrower_id"`
}

// Kind implements river.JobArgs.
func (MergeArgs) Kind() string { return KindMerge }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (MergeArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: queue.Default, MaxAttempts: 25}
}

// SweepArgs are the args of the periodic case.sweep.
type SweepArgs struct{}

// Kind implements river.JobArgs.
func (SweepArgs) Kind() string { return KindSweep }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (SweepArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: queue.Maintenance, MaxAttempts: 3}
}

// RequestMergesTx makes sure a case.merge will see this transaction's new
// items of each borrower: a shared per-borrower lock held to commit (the
// merge takes it exclusively), a signal row per borrower that has none,
// and a job for exactly those.
func RequestMergesTx(ctx context.Context, tx *db.Tx, borrowers []string) (int, error) {
	if len(borrowers) == 0 {
		return 0, nil
	}
	created, err := tx.RequestMerge(ctx, borrowers)
	if err != nil {
		return 0, fmt.Errorf("request merge: %w", err)
	}
	params := make([]river.InsertManyParams, len(created))
	for i, b := range created {
		params[i] = river.InsertManyParams{Args: MergeArgs{BorrowerID: b}}
	}
	if _, err := tx.InsertMany(ctx, params); err != nil {
		return 0, err
	}
	return len(created), nil
}

// ResolveLoansTx resolves the open items of loans that were repaid or are
// no longer overdue and closes the cases whose last item that was; it
// returns the cases closed.
func ResolveLoansTx(ctx context.Context, tx *db.Tx, loanIDs []int64) ([]int64, error) {
	if len(loanIDs) == 0 {
		return nil, nil
	}
	closed, err := tx.ResolveLoans(ctx, loanIDs)
	if err != nil {
		return nil, fmt.Errorf("resolve collection items: %w", err)
	}
	return closed, ClosedEventsTx(ctx, tx, closed)
}

// ClosedEventsTx appends case.closed for each case closed in tx (with
// the case as the API shows it).
func ClosedEventsTx(ctx context.Context, tx *db.Tx, ids []int64) error {
	for _, id := range ids {
		c, err := tx.GetCase(ctx, id)
		if err != nil {
			return fmt.Errorf("read closed case: %w", err)
		}
		cs, err := withItems(ctx, tx.Queries, []db.CollectionCase{c})
		if err != nil {
			return err
		}
		if err := events.AppendTx(ctx, tx, events.CaseClosed, "case", events.ID(id), cs[0]); err != nil {
			return err
		}
	}
	return nil
}

// Service merges and reads collection cases.
type Service struct {
	store  *db.Store
	logger *slog.Logger
}

// NewService returns a collection service on store.
func NewService(store *db.Store, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{store: store, logger: logger}
}

// MergeResult says what one merge did.
type MergeResult struct {
	CaseID   int64
	Attached int
	Opened   bool
}

// Merge attaches every unattached open item of a borrower to the
// borrower's OPEN case, opening one if there is none (the partial unique
// index allows one). It takes the borrower's lock exclusively — waiting
// for every writer that requested a merge and has not committed — then
// deletes the signal, so a writer after that creates a new signal and a
// new job. Items resolved before the merge are left alone; with nothing to
// attach no case is opened — including when the items it saw are resolved
// by a transaction that commits while it waits to attach them: the case
// it opened is rolled back (a savepoint), since an OPEN case without an
// open item would never close.
func (s *Service) Merge(ctx context.Context, borrowerID string) (MergeResult, error) {
	var res MergeResult
	err := s.store.InTx(ctx, func(tx *db.Tx) error {
		if err := tx.LockBorrowerMergeExclusive(ctx, borrowerID); err != nil {
			return fmt.Errorf("lock borrower: %w", err)
		}
		if err := tx.DeleteMergeSignal(ctx, borrowerID); err != nil {
			return fmt.Errorf("delete merge signal: %w", err)
		}
		// Items first, then the case: the lock order of resolvers too.
		pending, err := tx.LockUnattachedItems(ctx, borrowerID)
		if err != nil {
			return fmt.Errorf("lock unattached items: %w", err)
		}
		if len(pending) == 0 {
			return nil
		}
		err = tx.Savepoint(ctx, func(sp *db.Tx) error {
			res = MergeResult{}
			c, err := sp.LockOpenCase(ctx, borrowerID)
			if db.IsNotFound(err) {
				c, err = sp.InsertOpenCase(ctx, borrowerID)
				res.Opened = err == nil
			}
			if err != nil {
				return fmt.Errorf("find or open case: %w", err)
			}
			items, err := sp.AttachItems(ctx, db.AttachItemsParams{CaseID: &c.ID, BorrowerID: borrowerID})
			if err != nil {
				return fmt.Errorf("attach items: %w", err)
			}
			if len(items) == 0 && res.Opened {
				return errNothingAttached
			}
			if err := sp.TouchCase(ctx, c.ID); err != nil {
				return fmt.Errorf("touch case: %w", err)
			}
			res.CaseID, res.Attached = c.ID, len(items)
			return nil
		})
		if errors.Is(err, errNothingAttached) {
			res = MergeResult{}
			return nil
		}
		return err
	})
	return res, err
}

// errNothingAttached rolls back a case Merge opened for items that were
// resolved before it could attach them.
var errNothingAttached = errors.New("nothing to attach")

// Sweep enqueues a case.merge for every borrower with unattached open
// items (found by a loose index scan of the partial index; at most limit
// borrowers per run) — the safety net for a merge job that was lost (an
// operator's cancel, a discard after its last attempt). Such a borrower's
// signal is usually still there, so requesting a merge through the signal
// would enqueue nothing and no writer would either: the sweep enqueues the
// job whatever the signal, and the merge deletes the signal. A borrower
// whose job is merely pending gets a second merge, which finds nothing to
// do.
func (s *Service) Sweep(ctx context.Context, limit int) (int, error) {
	var n int
	err := s.store.InTx(ctx, func(tx *db.Tx) error {
		bs, err := tx.BorrowersWithUnattachedItems(ctx, int32(limit))
		if err != nil {
			return fmt.Errorf("find unattached items: %w", err)
		}
		params := make([]river.InsertManyParams, len(bs))
		for i, b := range bs {
			params[i] = river.InsertManyParams{Args: MergeArgs{BorrowerID: b}}
		}
		if _, err := tx.InsertMany(ctx, params); err != nil {
			return err
		}
		n = len(bs)
		return nil
	})
	return n, err
}

// Loan is a loan in a case.
type Loan struct {
	LoanID           int64
	LoanNo           string
	Currency         string
	LoanStatus       string
	DaysPastDue      int32
	OutstandingMinor int64
	OpenedOn         time.Time
	AttachedAt       *time.Time
	ResolvedAt       *time.Time
}

// CurrencyAmount is an amount in one currency.
type CurrencyAmount struct {
	Currency    string
	AmountMinor int64
}

// Case is a collection case with its loans and live totals.
type Case struct {
	db.CollectionCase
	Loans []Loan
	// ItemCount is the number of loans in the case that are still overdue
	// (unresolved items).
	ItemCount int
	// OverdueTotals is what those loans owe now, per currency.
	OverdueTotals []CurrencyAmount
	// MaxDaysPastDue is the largest days past due among them.
	MaxDaysPastDue int32
}

// withItems loads the loans of cases and computes their totals from the
// loans as they are now (never a stored figure that could go stale).
func withItems(ctx context.Context, q *db.Queries, cs []db.CollectionCase) ([]*Case, error) {
	out := make([]*Case, len(cs))
	ids := make([]int64, len(cs))
	byID := map[int64]*Case{}
	for i, c := range cs {
		out[i] = &Case{CollectionCase: c, Loans: []Loan{}, OverdueTotals: []CurrencyAmount{}}
		ids[i] = c.ID
		byID[c.ID] = out[i]
	}
	if len(ids) == 0 {
		return out, nil
	}
	rows, err := q.CaseItems(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("load case items: %w", err)
	}
	for _, r := range rows {
		if r.CaseID == nil {
			continue
		}
		c := byID[*r.CaseID]
		c.Loans = append(c.Loans, Loan{LoanID: r.LoanID, LoanNo: r.LoanNo, Currency: r.Currency, LoanStatus: string(r.LoanStatus),
			DaysPastDue: r.DaysPastDue, OutstandingMinor: r.OutstandingMinor, OpenedOn: r.OpenedOn, AttachedAt: r.AttachedAt, ResolvedAt: r.ResolvedAt})
		if r.ResolvedAt != nil {
			continue
		}
		c.ItemCount++
		c.MaxDaysPastDue = max(c.MaxDaysPastDue, r.DaysPastDue)
		found := false
		for i := range c.OverdueTotals {
			if c.OverdueTotals[i].Currency == r.Currency {
				c.OverdueTotals[i].AmountMinor += r.OutstandingMinor
				found = true
			}
		}
		if !found {
			c.OverdueTotals = append(c.OverdueTotals, CurrencyAmount{Currency: r.Currency, AmountMinor: r.OutstandingMinor})
		}
	}
	return out, nil
}

// Get returns a case.
func (s *Service) Get(ctx context.Context, id int64) (*Case, error) {
	q := s.store.Queries()
	c, err := q.GetCase(ctx, id)
	if db.IsNotFound(err) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "case %d not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get case: %w", err)
	}
	cs, err := withItems(ctx, q, []db.CollectionCase{c})
	if err != nil {
		return nil, err
	}
	return cs[0], nil
}

// Filter selects cases for a list.
type Filter struct {
	BorrowerID string
	Status     string
	BeforeID   int64
	Limit      int
}

// List returns cases newest first.
func (s *Service) List(ctx context.Context, f Filter) ([]*Case, error) {
	p := db.ListCasesParams{BeforeID: f.BeforeID, Lim: int32(f.Limit)}
	if p.BeforeID <= 0 {
		p.BeforeID = 1<<63 - 1
	}
	if f.BorrowerID != "" {
		p.BorrowerID = &f.BorrowerID
	}
	if f.Status != "" {
		st := db.CollectionCaseStatus(f.Status)
		if !st.Valid() {
			return nil, riverbank.Errorf(riverbank.EINVALID, "status must be OPEN or CLOSED").WithDetail("field", "status")
		}
		p.Status = &st
	}
	q := s.store.Queries()
	rows, err := q.ListCases(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("list cases: %w", err)
	}
	return withItems(ctx, q, rows)
}

// OpenCaseOfLoans maps loans to the open case holding them.
func (s *Service) OpenCaseOfLoans(ctx context.Context, loanIDs []int64) (map[int64]int64, error) {
	rows, err := s.store.Queries().OpenCaseOfLoans(ctx, loanIDs)
	if err != nil {
		return nil, fmt.Errorf("find cases of loans: %w", err)
	}
	out := make(map[int64]int64, len(rows))
	for _, r := range rows {
		if r.CaseID != nil {
			out[r.LoanID] = *r.CaseID
		}
	}
	return out, nil
}
