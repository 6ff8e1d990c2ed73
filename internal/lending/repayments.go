package lending

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/riverqueue/river"

	"riverbank"
	"riverbank/internal/collection"
	"riverbank/internal/db"
	"riverbank/internal/events"
	"riverbank/internal/ledger"
	"riverbank/internal/lending/rules"
)

// RepaymentInput is POST /v1/loans/{id}/repayments.
type RepaymentInput struct {
	LoanID      int64  `json:"-"`
	Identifier  string `json:"identifier"`
	Payer       string `json:"payer"`
	AmountMinor int64  `json:"amount_minor"`
	// ValueDate is YYYY-MM-DD; empty means today in the business time
	// zone.
	ValueDate string `json:"value_date,omitempty"`
}

// Validate checks a repayment's shape without touching the database.
func (in *RepaymentInput) Validate() error {
	if in.Identifier == "" || utf8.RuneCountInString(in.Identifier) > MaxIdentLen || !riverbank.ValidText(in.Identifier) || strings.ContainsRune(in.Identifier, utf8.RuneError) {
		return invalid("identifier is required: 1..%d characters of valid UTF-8 without NUL", MaxIdentLen).WithDetail("field", "identifier")
	}
	switch rules.Payer(in.Payer) {
	case rules.PayerDealer, rules.PayerManufacturer:
	default:
		return invalid("payer must be DEALER or MANUFACTURER").WithDetail("field", "payer")
	}
	if in.AmountMinor < 1 || in.AmountMinor > MaxAmountMinor {
		return invalid("amount_minor must be between 1 and %d", int64(MaxAmountMinor)).WithDetail("field", "amount_minor")
	}
	if in.ValueDate != "" {
		if _, err := ParseDate("value_date", in.ValueDate); err != nil {
			return err
		}
	}
	return nil
}

func (in *RepaymentInput) hash() string {
	b, _ := json.Marshal(in)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Repayment is a stored repayment with its allocation.
type Repayment struct {
	db.Repayment
	// Loan is the loan after this repayment (on a replay: as it is now).
	Loan *Loan
}

// Allocation is what the repayment paid, by component.
func (r *Repayment) Allocation() rules.Allocation {
	return rules.Allocation{PenaltyMinor: r.PenaltyMinor, LateFeeMinor: r.LateFeeMinor, InterestDealerMinor: r.InterestDealerMinor,
		InterestManufacturerMinor: r.InterestManufacturerMinor, PrincipalMinor: r.PrincipalMinor}
}

// RepaymentEntryKey is the idempotency key of a repayment's ledger entry.
func RepaymentEntryKey(loanID int64, identifier string) string {
	return fmt.Sprintf("%sloan:%d:repayment:%s", ledger.SystemKeyPrefix, loanID, identifier)
}

func outstanding(l db.Loan) rules.Outstanding {
	return rules.Outstanding{
		PrincipalMinor: l.PrincipalOutstandingMinor, InterestDealerMinor: l.InterestOutstandingDealerMinor,
		InterestManufacturerMinor: l.InterestOutstandingManufacturerMinor, PenaltyMinor: l.PenaltyOutstandingMinor,
		LateFeeMinor: l.LateFeeOutstandingMinor,
	}
}

// Repay accepts a repayment in one transaction: lock the loan (one loan's
// repayments are serialised), answer a repeated identifier with the
// original (same payload) or 409 idempotency_conflict, check the value
// date (after the loan's last closed date, else 409 date_not_open; not
// before the loan's start nor after today, else 422), allocate the amount
// in the payer's order (more than the payer owes is 422 overpayment),
// update the loan (REPAID when nothing is owed any more), post the entry
// (debit platform:cash, credit each receivable paid) and insert
// credit.restore for the principal part — the outbox: the restoration
// exists exactly when the repayment does.
func (s *Service) Repay(ctx context.Context, in RepaymentInput) (*Repayment, bool, error) {
	if err := in.Validate(); err != nil {
		return nil, false, err
	}
	hash := in.hash()
	var (
		out     *Repayment
		created bool
	)
	err := s.store.InTx(ctx, func(tx *db.Tx) error {
		loan, err := tx.LockLoan(ctx, in.LoanID)
		if db.IsNotFound(err) {
			return riverbank.Errorf(riverbank.ENOTFOUND, "loan %d not found", in.LoanID)
		}
		if err != nil {
			return fmt.Errorf("lock loan: %w", err)
		}
		existing, err := tx.GetRepaymentByIdentifier(ctx, db.GetRepaymentByIdentifierParams{LoanID: loan.ID, Identifier: in.Identifier})
		if err == nil {
			if existing.RequestHash != hash {
				return riverbank.Errorf(riverbank.EIDEMPOTENCYCONFLICT, "identifier %q was used for a different repayment of loan %d", in.Identifier, loan.ID).WithDetail("repayment_id", existing.ID)
			}
			out = &Repayment{Repayment: existing, Loan: &Loan{loan}}
			return nil
		}
		if !db.IsNotFound(err) {
			return fmt.Errorf("read repayment: %w", err)
		}

		today := s.Today()
		valueDate := today
		if in.ValueDate != "" {
			valueDate, _ = ParseDate("value_date", in.ValueDate)
		}
		if loan.LastClosedDate != nil && !valueDate.After(*loan.LastClosedDate) {
			first := loan.LastClosedDate.AddDate(0, 0, 1).Format(DateLayout)
			return riverbank.Errorf(riverbank.EDATENOTOPEN, "value_date %s is in a closed period: loan %d is closed through %s; the first open date is %s",
				valueDate.Format(DateLayout), loan.ID, loan.LastClosedDate.Format(DateLayout), first).WithDetail("first_open_date", first)
		}
		if valueDate.Before(loan.StartDate) {
			return invalid("value_date %s is before the loan's start_date %s", valueDate.Format(DateLayout), loan.StartDate.Format(DateLayout)).WithDetail("field", "value_date")
		}
		if valueDate.After(today) {
			return invalid("value_date %s is in the future (today is %s)", valueDate.Format(DateLayout), today.Format(DateLayout)).WithDetail("field", "value_date")
		}

		alloc, err := s.strategy.Allocate(outstanding(loan), rules.Payer(in.Payer), in.AmountMinor)
		if err != nil {
			return err
		}
		postings := []ledger.PostingInput{{Account: ledger.AccountPlatformCash, AmountMinor: in.AmountMinor}}
		for _, c := range []struct {
			account string
			amount  int64
		}{
			{ledger.AccountLoansPenalty, alloc.PenaltyMinor},
			{ledger.AccountLoansLateFee, alloc.LateFeeMinor},
			{ledger.AccountLoansInterestDealer, alloc.InterestDealerMinor},
			{ledger.AccountLoansInterestManufacturer, alloc.InterestManufacturerMinor},
			{ledger.AccountLoansPrincipal, alloc.PrincipalMinor},
		} {
			if c.amount > 0 {
				postings = append(postings, ledger.PostingInput{Account: c.account, AmountMinor: -c.amount})
			}
		}
		entry, _, err := ledger.PostTx(ctx, tx, ledger.EntryInput{
			IdempotencyKey:       RepaymentEntryKey(loan.ID, in.Identifier),
			Description:          fmt.Sprintf("repayment %s of loan %s by %s", in.Identifier, loan.LoanNo, strings.ToLower(in.Payer)),
			Currency:             loan.Currency,
			Postings:             postings,
			CreateSystemAccounts: true,
		})
		if err != nil {
			return fmt.Errorf("post repayment: %w", err)
		}
		repaid := outstanding(loan).Sub(alloc).IsZero()
		loan, err = tx.RepayLoan(ctx, db.RepayLoanParams{
			ID: loan.ID, PrincipalMinor: alloc.PrincipalMinor, InterestDealerMinor: alloc.InterestDealerMinor,
			InterestManufacturerMinor: alloc.InterestManufacturerMinor, PenaltyMinor: alloc.PenaltyMinor, LateFeeMinor: alloc.LateFeeMinor,
			Repaid: repaid,
		})
		if err != nil {
			return fmt.Errorf("update loan: %w", err)
		}
		rep, err := tx.InsertRepayment(ctx, db.InsertRepaymentParams{
			LoanID: loan.ID, Identifier: in.Identifier, RequestHash: hash, Payer: db.RepaymentPayer(in.Payer),
			AmountMinor: in.AmountMinor, ValueDate: valueDate, PenaltyMinor: alloc.PenaltyMinor, LateFeeMinor: alloc.LateFeeMinor,
			InterestDealerMinor: alloc.InterestDealerMinor, InterestManufacturerMinor: alloc.InterestManufacturerMinor,
			PrincipalMinor: alloc.PrincipalMinor, LedgerEntryID: entry.ID,
		})
		if err != nil {
			return fmt.Errorf("insert repayment: %w", err)
		}
		if repaid {
			// Its collection item resolves, and its case closes if it was
			// the last (SPEC §4), in this transaction.
			if _, err := collection.ResolveLoansTx(ctx, tx, []int64{loan.ID}); err != nil {
				return err
			}
			if err := events.AppendTx(ctx, tx, events.LoanRepaid, "loan", events.ID(loan.ID), &Loan{loan}); err != nil {
				return err
			}
		}
		if alloc.PrincipalMinor > 0 {
			if _, err := tx.Insert(ctx, RestoreArgs{RepaymentID: rep.ID}, &river.InsertOpts{MaxAttempts: s.attempts}); err != nil {
				return err
			}
		}
		out, created = &Repayment{Repayment: rep, Loan: &Loan{loan}}, true
		return events.AppendTx(ctx, tx, events.RepaymentAccepted, "repayment", events.ID(rep.ID), out)
	})
	return out, created, err
}

// ListRepayments returns a loan's repayments oldest first, after afterID.
func (s *Service) ListRepayments(ctx context.Context, loanID, afterID int64, limit int) ([]*Repayment, error) {
	q := s.store.Queries()
	if _, err := q.GetLoan(ctx, loanID); db.IsNotFound(err) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "loan %d not found", loanID)
	} else if err != nil {
		return nil, fmt.Errorf("get loan: %w", err)
	}
	rows, err := q.ListRepayments(ctx, db.ListRepaymentsParams{LoanID: loanID, AfterID: afterID, Lim: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list repayments: %w", err)
	}
	out := make([]*Repayment, len(rows))
	for i, r := range rows {
		out[i] = &Repayment{Repayment: r}
	}
	return out, nil
}

// ErrCreditLineFrozen is credit.restore's retryable failure: the line is
// frozen, so the principal waits (River retries with backoff, and after
// RIVERBANK_CREDIT_RESTORE_MAX_ATTEMPTS discards the job into the dead
// letters, from which an operator retries it once the line is unfrozen).
var ErrCreditLineFrozen = riverbank.Errorf(riverbank.ECONFLICT, "credit line is frozen")

// RestoreResult says what a credit.restore run did.
type RestoreResult struct {
	// Restored is the principal given back now (0: nothing to do, or done
	// before).
	Restored int64
	// Already is true when an earlier run restored it.
	Already bool
}

// Restore gives a repayment's principal back to its borrower's credit
// line, exactly once: under the line's row lock it checks for the
// repayment's credit_restoration row, and writes that row together with
// used −= principal. A frozen line is ErrCreditLineFrozen (retry later).
func (s *Service) Restore(ctx context.Context, repaymentID int64) (RestoreResult, error) {
	var res RestoreResult
	err := s.store.InTx(ctx, func(tx *db.Tx) error {
		rep, err := tx.GetRepayment(ctx, repaymentID)
		if db.IsNotFound(err) {
			return riverbank.Errorf(riverbank.ENOTFOUND, "repayment %d not found", repaymentID)
		}
		if err != nil {
			return fmt.Errorf("read repayment: %w", err)
		}
		if rep.PrincipalMinor == 0 {
			return nil
		}
		loan, err := tx.GetLoan(ctx, rep.LoanID)
		if err != nil {
			return fmt.Errorf("read loan: %w", err)
		}
		line, err := tx.LockCreditLine(ctx, loan.BorrowerID)
		if err != nil {
			return fmt.Errorf("lock credit line: %w", err)
		}
		if _, err := tx.GetCreditRestoration(ctx, rep.ID); err == nil {
			res.Already = true
			return nil
		} else if !db.IsNotFound(err) {
			return fmt.Errorf("read credit restoration: %w", err)
		}
		if line.Frozen {
			return fmt.Errorf("restore %d %s to %s: %w", rep.PrincipalMinor, loan.Currency, loan.BorrowerID, ErrCreditLineFrozen)
		}
		if _, err := tx.InsertCreditRestoration(ctx, db.InsertCreditRestorationParams{RepaymentID: rep.ID, BorrowerID: loan.BorrowerID, AmountMinor: rep.PrincipalMinor}); err != nil {
			return fmt.Errorf("record credit restoration: %w", err)
		}
		after, err := tx.ReleaseCredit(ctx, db.ReleaseCreditParams{BorrowerID: loan.BorrowerID, Amount: rep.PrincipalMinor})
		if err != nil {
			return fmt.Errorf("release credit: %w", err)
		}
		res.Restored = rep.PrincipalMinor
		return events.AppendTx(ctx, tx, events.CreditLineRestored, "credit_line", after.BorrowerID, creditLineFromRow(after))
	})
	return res, err
}

// RestoreRetryDelay is credit.restore's backoff before attempt+1: the
// service's base (RIVERBANK_CREDIT_RESTORE_BACKOFF) × 2^(attempt−1),
// capped at an hour; with the 1-minute default ten attempts span about
// four hours.
func (s *Service) RestoreRetryDelay(attempt int) time.Duration {
	d := s.backoff
	for i := 1; i < attempt && d < time.Hour; i++ {
		d *= 2
	}
	return min(d, time.Hour)
}
