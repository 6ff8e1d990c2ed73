package cob

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"riverbank/internal/collection"
	"riverbank/internal/db"
	"riverbank/internal/events"
	"riverbank/internal/ledger"
	"riverbank/internal/lending"
)

// accrualKinds are the ledger entries a chunk posts, each aggregated over
// the chunk's loans per currency: debit the receivable, credit the income.
var accrualKinds = []struct {
	name, debit, credit string
	amount              func(db.CloseLoansRow) int64
}{
	{"interest_dealer", ledger.AccountLoansInterestDealer, ledger.AccountIncomeInterest, func(r db.CloseLoansRow) int64 { return r.InterestDealerMinor }},
	{"interest_manufacturer", ledger.AccountLoansInterestManufacturer, ledger.AccountIncomeInterest, func(r db.CloseLoansRow) int64 { return r.InterestManufacturerMinor }},
	{"penalty", ledger.AccountLoansPenalty, ledger.AccountIncomePenalty, func(r db.CloseLoansRow) int64 { return r.PenaltyMinor }},
	{"late_fee", ledger.AccountLoansLateFee, ledger.AccountIncomeLateFee, func(r db.CloseLoansRow) int64 { return r.LateFeeMinor }},
}

// EntryKeyPrefix starts the idempotency key of every ledger entry a run
// for date posts.
func EntryKeyPrefix(date time.Time) string {
	return ledger.SystemKeyPrefix + "cob:" + fmtDate(date) + ":"
}

// postAccrualsTx posts one entry per kind and currency with a non-zero
// amount, keyed by date, part (chunk or loan) and kind, and adds the
// amounts to the run's totals.
func postAccrualsTx(ctx context.Context, tx *db.Tx, date time.Time, part string, rows []db.CloseLoansRow) error {
	for _, r := range rows {
		for _, k := range accrualKinds {
			amount := k.amount(r)
			if amount == 0 {
				continue
			}
			_, _, err := ledger.PostTx(ctx, tx, ledger.EntryInput{
				IdempotencyKey: EntryKeyPrefix(date) + part + ":" + k.name + ":" + r.Currency,
				Description:    fmt.Sprintf("close of business %s: %s of %d loans (%s)", fmtDate(date), k.name, r.Loans, part),
				Currency:       r.Currency,
				Postings: []ledger.PostingInput{
					{Account: k.debit, AmountMinor: amount},
					{Account: k.credit, AmountMinor: -amount},
				},
				CreateSystemAccounts: true,
			})
			if err != nil {
				return fmt.Errorf("post %s %s: %w", k.name, r.Currency, err)
			}
		}
		if err := tx.AddCOBTotals(ctx, db.AddCOBTotalsParams{BusinessDate: date, Currency: r.Currency,
			InterestDealerMinor: r.InterestDealerMinor, InterestManufacturerMinor: r.InterestManufacturerMinor,
			PenaltyMinor: r.PenaltyMinor, LateFeeMinor: r.LateFeeMinor}); err != nil {
			return fmt.Errorf("add run totals: %w", err)
		}
	}
	return nil
}

// mergeRows adds b's per-currency rows into a.
func mergeRows(a []db.CloseLoansRow, b []db.CloseLoansRow) []db.CloseLoansRow {
	for _, r := range b {
		found := false
		for i := range a {
			if a[i].Currency == r.Currency {
				a[i].Loans += r.Loans
				a[i].InterestDealerMinor += r.InterestDealerMinor
				a[i].InterestManufacturerMinor += r.InterestManufacturerMinor
				a[i].PenaltyMinor += r.PenaltyMinor
				a[i].LateFeeMinor += r.LateFeeMinor
				found = true
			}
		}
		if !found {
			a = append(a, r)
		}
	}
	return a
}

func loansIn(rows []db.CloseLoansRow) int64 {
	var n int64
	for _, r := range rows {
		n += r.Loans
	}
	return n
}

// ChunkResult says what one chunk did.
type ChunkResult struct {
	Loans  int64
	Failed int
	// Counted is false when the chunk had been counted before (a job run
	// twice): nothing was done again.
	Counted bool
}

// RunChunk closes date for the loans of one chunk, in one transaction:
// the set-based close (exactly once per loan and date by its guard); on a
// failure, the same loan by loan, each in a savepoint, recording the loans
// that fail with their error; the aggregated ledger entries; collection
// merges for the borrowers whose loans turned overdue; the chunk's count
// (once per chunk, cob_chunk) and the run's progress; and, in the chunk
// that completes the run, the run's status and what follows it.
func (s *Service) RunChunk(ctx context.Context, a ChunkArgs) (ChunkResult, error) {
	date, err := ParseDate(a.Date)
	if err != nil {
		return ChunkResult{}, err
	}
	started := time.Now()
	var res ChunkResult
	err = s.store.InTx(ctx, func(tx *db.Tx) error {
		run, err := tx.GetCOBRun(ctx, date)
		if err != nil {
			return fmt.Errorf("read run: %w", err)
		}
		// A chunk counted before (its job ran again after a commit River
		// did not record) does nothing: loans it left failed are closed by
		// retry-failures, never under the chunk's ledger keys again.
		done, err := tx.COBChunkCounted(ctx, db.COBChunkCountedParams{BusinessDate: date, Chunk: int32(a.Chunk)})
		if err != nil {
			return fmt.Errorf("read chunk: %w", err)
		}
		if done {
			return nil
		}
		var rows []db.CloseLoansRow
		chunkErr := tx.Savepoint(ctx, func(sp *db.Tx) error {
			var err error
			rows, err = sp.CloseLoans(ctx, db.CloseLoansParams{BusinessDate: date, IDLo: a.Lo, IDHi: a.Hi, LateFeeDay: run.LateFeeDay})
			return err
		})
		if chunkErr != nil && (ctx.Err() != nil || db.IsUnavailable(chunkErr)) {
			// The database went away (or the job ran out of time): loan by
			// loan would fail the same way. River retries the chunk.
			return chunkErr
		}
		if chunkErr != nil {
			s.logger.WarnContext(ctx, "close-of-business chunk failed; closing its loans one by one", "date", a.Date, "chunk", a.Chunk, "error", chunkErr)
			rows, res.Failed, err = s.closeOneByOne(ctx, tx, date, run.LateFeeDay, a.Lo, a.Hi)
			if err != nil {
				return err
			}
		}
		if err := s.requestMergesTx(ctx, tx, date, a.Lo, a.Hi); err != nil {
			return err
		}
		// The run's totals (cob_run_total) and progress (cob_run) are rows
		// every chunk updates: they come last, so a chunk holds their locks
		// only for the few statements before its commit and concurrent
		// chunks do not queue behind each other's merge requests and events.
		if err := postAccrualsTx(ctx, tx, date, fmt.Sprintf("chunk:%d", a.Chunk), rows); err != nil {
			return err
		}
		res.Loans = loansIn(rows)
		counted, err := tx.InsertCOBChunk(ctx, db.InsertCOBChunkParams{BusinessDate: date, Chunk: int32(a.Chunk), LoansDone: int32(res.Loans), LoansFailed: int32(res.Failed), StartedAt: started})
		if db.IsNotFound(err) {
			// Counted by an earlier run of this job; the guard made this run
			// close nothing.
			return nil
		}
		if err != nil {
			return fmt.Errorf("record chunk: %w", err)
		}
		_ = counted
		res.Counted = true
		run, err = tx.AddCOBProgress(ctx, db.AddCOBProgressParams{BusinessDate: date, Chunks: 1, LoansDone: res.Loans, LoansFailed: int64(res.Failed)})
		if err != nil {
			return fmt.Errorf("count progress: %w", err)
		}
		if run.ChunksDone == run.ChunksTotal {
			return s.finishTx(ctx, tx, run)
		}
		return nil
	})
	return res, err
}

// closeOneByOne closes a chunk's remaining loans one at a time, each in a
// savepoint, recording every loan that fails (with a summary of the error
// that names no values) and going on with the rest.
func (s *Service) closeOneByOne(ctx context.Context, tx *db.Tx, date time.Time, lateFeeDay int32, lo, hi int64) ([]db.CloseLoansRow, int, error) {
	ids, err := tx.EligibleLoanIDs(ctx, db.EligibleLoanIDsParams{IDLo: lo, IDHi: hi, BusinessDate: date})
	if err != nil {
		return nil, 0, fmt.Errorf("list chunk loans: %w", err)
	}
	var (
		rows   []db.CloseLoansRow
		failed int
	)
	for _, id := range ids {
		var one []db.CloseLoansRow
		err := tx.Savepoint(ctx, func(sp *db.Tx) error {
			var err error
			one, err = sp.CloseLoans(ctx, db.CloseLoansParams{BusinessDate: date, IDLo: id, IDHi: id + 1, LateFeeDay: lateFeeDay})
			return err
		})
		if err != nil {
			if ctx.Err() != nil || db.IsUnavailable(err) {
				return nil, 0, err
			}
			s.logger.ErrorContext(ctx, "close of business failed for a loan", "date", fmtDate(date), "loan_id", id, "error", err)
			if err := tx.RecordFailedLoan(ctx, db.RecordFailedLoanParams{BusinessDate: date, LoanID: id, Error: db.Describe(err)}); err != nil {
				return nil, 0, fmt.Errorf("record failed loan: %w", err)
			}
			failed++
			continue
		}
		rows = mergeRows(rows, one)
	}
	return rows, failed, nil
}

// requestMergesTx asks for a case.merge for every borrower whose loans in
// [lo, hi) turned overdue on date, and appends the events of what this
// transaction did to those loans and cases: loan.overdue (one statement
// for the chunk) and case.closed for cases whose last loan is no longer
// overdue.
func (s *Service) requestMergesTx(ctx context.Context, tx *db.Tx, date time.Time, lo, hi int64) error {
	bs, err := tx.NewlyOverdueBorrowers(ctx, db.NewlyOverdueBorrowersParams{BusinessDate: date, IDLo: lo, IDHi: hi})
	if err != nil {
		return fmt.Errorf("find newly overdue borrowers: %w", err)
	}
	if _, err := collection.RequestMergesTx(ctx, tx, bs); err != nil {
		return err
	}
	loans, err := tx.LoansTurnedOverdue(ctx, db.LoansTurnedOverdueParams{IDLo: lo, IDHi: hi})
	if err != nil {
		return fmt.Errorf("read loans turned overdue: %w", err)
	}
	ids := make([]string, len(loans))
	resources := make([]any, len(loans))
	for i := range loans {
		ids[i], resources[i] = events.ID(loans[i].ID), &lending.Loan{Loan: loans[i]}
	}
	if err := events.AppendMany(ctx, tx, events.LoanOverdue, "loan", ids, resources); err != nil {
		return err
	}
	closed, err := tx.CasesClosedNow(ctx, db.CasesClosedNowParams{IDLo: lo, IDHi: hi})
	if err != nil {
		return fmt.Errorf("read cases closed: %w", err)
	}
	return collection.ClosedEventsTx(ctx, tx, closed)
}

// finishTx ends a run whose last chunk (or last retry) is done: COMPLETED
// when no loan failed (the date is closed; the trial balance and the next
// catch-up date follow), else FAILED (the date stays open until
// retry-failures closes the failed loans).
func (s *Service) finishTx(ctx context.Context, tx *db.Tx, run db.CobRun) error {
	status := db.CobRunStatusCOMPLETED
	if run.LoansFailed > 0 {
		status = db.CobRunStatusFAILED
	}
	run, err := tx.SetCOBRunStatus(ctx, db.SetCOBRunStatusParams{BusinessDate: run.BusinessDate, Status: status})
	if err != nil {
		return fmt.Errorf("set run status: %w", err)
	}
	if status == db.CobRunStatusFAILED {
		s.logger.WarnContext(ctx, "close-of-business run failed for some loans", "date", fmtDate(run.BusinessDate), "loans_failed", run.LoansFailed)
		return nil
	}
	return s.closedTx(ctx, tx, run)
}

// RetryFailedLoans re-runs the failed loans of a run, one by one: each
// that closes leaves the failed list and counts as done (its entries keyed
// by the loan); each that fails again keeps its row with the new error.
func (s *Service) RetryFailedLoans(ctx context.Context, dateStr string) (int, error) {
	date, err := ParseDate(dateStr)
	if err != nil {
		return 0, err
	}
	var remaining int
	err = s.store.InTx(ctx, func(tx *db.Tx) error {
		run, err := tx.LockCOBRun(ctx, date)
		if err != nil {
			return fmt.Errorf("lock run: %w", err)
		}
		if run.Status != db.CobRunStatusRUNNING || run.ChunksDone != run.ChunksTotal {
			return nil
		}
		failed, err := tx.FailedLoans(ctx, db.FailedLoansParams{BusinessDate: date, Lim: 1 << 30})
		if err != nil {
			return fmt.Errorf("read failed loans: %w", err)
		}
		var done int64
		for _, f := range failed {
			var one []db.CloseLoansRow
			err := tx.Savepoint(ctx, func(sp *db.Tx) error {
				var err error
				if one, err = sp.CloseLoans(ctx, db.CloseLoansParams{BusinessDate: date, IDLo: f.LoanID, IDHi: f.LoanID + 1, LateFeeDay: run.LateFeeDay}); err != nil {
					return err
				}
				if err := postAccrualsTx(ctx, sp, date, fmt.Sprintf("loan:%d", f.LoanID), one); err != nil {
					return err
				}
				return s.requestMergesTx(ctx, sp, date, f.LoanID, f.LoanID+1)
			})
			if err != nil {
				if ctx.Err() != nil || db.IsUnavailable(err) {
					return err
				}
				if err := tx.RecordFailedLoan(ctx, db.RecordFailedLoanParams{BusinessDate: date, LoanID: f.LoanID, Error: db.Describe(err)}); err != nil {
					return fmt.Errorf("record failed loan: %w", err)
				}
				remaining++
				continue
			}
			if err := tx.DeleteFailedLoan(ctx, db.DeleteFailedLoanParams{BusinessDate: date, LoanID: f.LoanID}); err != nil {
				return fmt.Errorf("delete failed loan: %w", err)
			}
			done++
		}
		run, err = tx.AddCOBProgress(ctx, db.AddCOBProgressParams{BusinessDate: date, Chunks: 0, LoansDone: done, LoansFailed: -done})
		if err != nil {
			return fmt.Errorf("count progress: %w", err)
		}
		return s.finishTx(ctx, tx, run)
	})
	return remaining, err
}

// TrialBalanceCheck is the stored result of cob.trial_balance.
type TrialBalanceCheck struct {
	// Balanced is true when the ledger balances in every currency, every
	// receivable account equals what the loans owe, and the run's totals
	// equal the postings it made.
	Balanced bool `json:"balanced"`
	// Ledger is the ledger's trial balance per currency.
	Ledger []LedgerLine `json:"ledger"`
	// Subledger compares each receivable account with the loans.
	Subledger []SubledgerLine `json:"subledger"`
	// RunPostingsMatch is true when the run's stored totals equal the sum
	// of the ledger entries it posted.
	RunPostingsMatch bool      `json:"run_postings_match"`
	CheckedAt        time.Time `json:"checked_at"`
}

// LedgerLine is one currency of the ledger's trial balance.
type LedgerLine struct {
	Currency          string `json:"currency"`
	BalanceTotalMinor int64  `json:"balance_total_minor"`
	PendingTotalMinor int64  `json:"pending_total_minor"`
	// Balanced is true when the currency's postings, applied and pending,
	// sum to zero (balance total + pending total = 0).
	Balanced bool `json:"balanced"`
}

// SubledgerLine is one receivable account next to the loans' matching
// outstanding field, in one currency.
type SubledgerLine struct {
	Currency     string `json:"currency"`
	Account      string `json:"account"`
	LoansMinor   int64  `json:"loans_minor"`
	AccountMinor int64  `json:"account_minor"`
	Equal        bool   `json:"equal"`
}

// CheckTrialBalance computes a closed run's trial balance and stores it on
// the run. The account side is balance plus pending postings (every
// posting made), so the check holds whatever the apply queue's backlog.
func (s *Service) CheckTrialBalance(ctx context.Context, dateStr string, ledgerSvc *ledger.Service) (*TrialBalanceCheck, error) {
	date, err := ParseDate(dateStr)
	if err != nil {
		return nil, err
	}
	tb, err := ledgerSvc.TrialBalance(ctx)
	if err != nil {
		return nil, err
	}
	// The ledger's own flag (both totals zero) also needs the apply queue
	// drained, which this check, enqueued by the run's last chunk, cannot
	// wait for: the run's entries are applied later per account, and an
	// entry applied on one account but not yet on the other leaves both
	// totals non-zero. What must hold whatever the backlog is that every
	// posting made, applied or pending, sums to zero, and that every
	// balance is the sum of its applied postings.
	out := &TrialBalanceCheck{Balanced: len(tb.Mismatches) == 0, Ledger: []LedgerLine{}, Subledger: []SubledgerLine{}, CheckedAt: time.Now().UTC()}
	for _, c := range tb.Currencies {
		balanced := c.BalanceTotalMinor+c.PendingTotalMinor == 0
		out.Balanced = out.Balanced && balanced
		out.Ledger = append(out.Ledger, LedgerLine{Currency: c.Currency, BalanceTotalMinor: c.BalanceTotalMinor, PendingTotalMinor: c.PendingTotalMinor, Balanced: balanced})
	}
	q := s.store.Queries()
	sub, err := q.COBSubledger(ctx)
	if err != nil {
		return nil, fmt.Errorf("sub-ledger check: %w", err)
	}
	for _, r := range sub {
		for _, l := range []SubledgerLine{
			{r.Currency, ledger.AccountLoansPrincipal, r.LoansPrincipal, r.AccountPrincipal, false},
			{r.Currency, ledger.AccountLoansInterestDealer, r.LoansInterestDealer, r.AccountInterestDealer, false},
			{r.Currency, ledger.AccountLoansInterestManufacturer, r.LoansInterestManufacturer, r.AccountInterestManufacturer, false},
			{r.Currency, ledger.AccountLoansPenalty, r.LoansPenalty, r.AccountPenalty, false},
			{r.Currency, ledger.AccountLoansLateFee, r.LoansLateFee, r.AccountLateFee, false},
		} {
			l.Equal = l.LoansMinor == l.AccountMinor
			out.Balanced = out.Balanced && l.Equal
			out.Subledger = append(out.Subledger, l)
		}
	}
	posted, err := q.COBRunPostings(ctx, EntryKeyPrefix(date))
	if err != nil {
		return nil, fmt.Errorf("read run postings: %w", err)
	}
	totals, err := q.COBRunTotals(ctx, date)
	if err != nil {
		return nil, fmt.Errorf("read run totals: %w", err)
	}
	want := map[string]int64{}
	for _, t := range totals {
		want[t.Currency+" "+ledger.AccountLoansInterestDealer] = t.InterestDealerMinor
		want[t.Currency+" "+ledger.AccountLoansInterestManufacturer] = t.InterestManufacturerMinor
		want[t.Currency+" "+ledger.AccountLoansPenalty] = t.PenaltyMinor
		want[t.Currency+" "+ledger.AccountLoansLateFee] = t.LateFeeMinor
	}
	got := map[string]int64{}
	for _, p := range posted {
		got[p.Currency+" "+p.Code] = p.Total
	}
	out.RunPostingsMatch = true
	for k, v := range want {
		if got[k] != v {
			out.RunPostingsMatch = false
		}
	}
	for k, v := range got {
		if want[k] != v {
			out.RunPostingsMatch = false
		}
	}
	out.Balanced = out.Balanced && out.RunPostingsMatch
	b, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("encode trial balance: %w", err)
	}
	if err := q.SetCOBTrialBalance(ctx, db.SetCOBTrialBalanceParams{BusinessDate: date, TrialBalance: b}); err != nil {
		return nil, fmt.Errorf("store trial balance: %w", err)
	}
	if !out.Balanced {
		s.logger.ErrorContext(ctx, "close-of-business trial balance does not balance", "date", dateStr)
	}
	return out, nil
}
