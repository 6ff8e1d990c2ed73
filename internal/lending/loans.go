package lending

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/events"
	"riverbank/internal/ledger"
)

// Interest modes: who bears a loan's interest.
const (
	ModeDealer       = "DEALER"
	ModeManufacturer = "MANUFACTURER"
	ModeSplit        = "SPLIT"
)

// Loan statuses.
const (
	StatusActive  = "ACTIVE"
	StatusOverdue = "OVERDUE"
	StatusRepaid  = "REPAID"
)

// LoanInput is POST /v1/loans. Dates are YYYY-MM-DD.
type LoanInput struct {
	LoanNo               string `json:"loan_no"`
	BorrowerID           string `json:"borrower_id"`
	Currency             string `json:"currency"`
	PrincipalMinor       int64  `json:"principal_minor"`
	AnnualRateBps        int64  `json:"annual_rate_bps"`
	PenaltyRateBps       int64  `json:"penalty_rate_bps"`
	LateFeeMinor         int64  `json:"late_fee_minor"`
	StartDate            string `json:"start_date"`
	DueDate              string `json:"due_date"`
	InterestMode         string `json:"interest_mode"`
	DealerID             string `json:"dealer_id"`
	ManufacturerID       string `json:"manufacturer_id,omitempty"`
	ManufacturerShareBps int64  `json:"manufacturer_share_bps,omitempty"`
}

// Validate checks a loan request without touching the database and
// returns its parsed dates. Every rule names its field.
func (in *LoanInput) Validate() (start, due time.Time, err error) {
	field := func(name, format string, args ...any) error {
		return invalid(format, args...).WithDetail("field", name)
	}
	switch {
	case !loanNoRE.MatchString(in.LoanNo):
		return start, due, field("loan_no", "loan_no %q must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':', '@', '/', '-', starting with a letter or digit", in.LoanNo)
	case !idRE.MatchString(in.BorrowerID):
		return start, due, field("borrower_id", "borrower_id %q is not a valid id", in.BorrowerID)
	case !currencyRE.MatchString(in.Currency):
		return start, due, field("currency", "currency %q is not an ISO 4217 code (three capital letters)", in.Currency)
	case in.PrincipalMinor < 1 || in.PrincipalMinor > MaxAmountMinor:
		return start, due, field("principal_minor", "principal_minor must be between 1 and %d", int64(MaxAmountMinor))
	case in.AnnualRateBps < 0 || in.AnnualRateBps > MaxRateBps:
		return start, due, field("annual_rate_bps", "annual_rate_bps must be between 0 and %d", MaxRateBps)
	case in.PenaltyRateBps < 0 || in.PenaltyRateBps > MaxRateBps:
		return start, due, field("penalty_rate_bps", "penalty_rate_bps must be between 0 and %d", MaxRateBps)
	case in.LateFeeMinor < 0 || in.LateFeeMinor > MaxAmountMinor:
		return start, due, field("late_fee_minor", "late_fee_minor must be between 0 and %d", int64(MaxAmountMinor))
	case !idRE.MatchString(in.DealerID):
		return start, due, field("dealer_id", "dealer_id %q is not a valid id", in.DealerID)
	}
	if start, err = ParseDate("start_date", in.StartDate); err != nil {
		return start, due, err
	}
	if due, err = ParseDate("due_date", in.DueDate); err != nil {
		return start, due, err
	}
	if !due.After(start) {
		return start, due, field("due_date", "due_date %s must be after start_date %s", in.DueDate, in.StartDate)
	}
	switch in.InterestMode {
	case ModeDealer:
		if in.ManufacturerShareBps != 0 {
			return start, due, field("manufacturer_share_bps", "manufacturer_share_bps is only for SPLIT loans")
		}
		if in.ManufacturerID != "" && !idRE.MatchString(in.ManufacturerID) {
			return start, due, field("manufacturer_id", "manufacturer_id %q is not a valid id", in.ManufacturerID)
		}
	case ModeManufacturer, ModeSplit:
		if !idRE.MatchString(in.ManufacturerID) {
			return start, due, field("manufacturer_id", "manufacturer_id is required for %s loans (a valid id)", in.InterestMode)
		}
		if in.InterestMode == ModeManufacturer && in.ManufacturerShareBps != 0 {
			return start, due, field("manufacturer_share_bps", "manufacturer_share_bps is only for SPLIT loans")
		}
		if in.InterestMode == ModeSplit && (in.ManufacturerShareBps < 1 || in.ManufacturerShareBps > 9999) {
			return start, due, field("manufacturer_share_bps", "manufacturer_share_bps must be between 1 and 9999 for SPLIT loans")
		}
	default:
		return start, due, field("interest_mode", "interest_mode must be DEALER, MANUFACTURER or SPLIT")
	}
	return start, due, nil
}

func (in *LoanInput) hash() string {
	b, _ := json.Marshal(in)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Loan is a loan with its outstanding amounts.
type Loan struct {
	db.Loan
}

// DisbursementKey is the idempotency key of a loan's disbursement entry.
func DisbursementKey(loanNo string) string {
	return ledger.SystemKeyPrefix + "loan:" + loanNo + ":disbursement"
}

// CreateLoan takes the credit, writes the loan ACTIVE and posts the
// disbursement (debit loans:principal, credit platform:cash, in the loan's
// currency) in one transaction. loan_no is the idempotency key: the same
// request again returns the loan (created=false); another request with the
// same loan_no is 409 idempotency_conflict. Concurrent requests with one
// loan_no serialise on a transaction lock, so credit is taken once.
func (s *Service) CreateLoan(ctx context.Context, in LoanInput) (*Loan, bool, error) {
	start, due, err := in.Validate()
	if err != nil {
		return nil, false, err
	}
	hash := in.hash()
	var (
		out     *Loan
		created bool
	)
	err = s.store.InTx(ctx, func(tx *db.Tx) error {
		if err := tx.LockLoanNo(ctx, in.LoanNo); err != nil {
			return fmt.Errorf("lock loan_no: %w", err)
		}
		existing, err := tx.GetLoanByNo(ctx, in.LoanNo)
		if err == nil {
			if existing.RequestHash != hash {
				return riverbank.Errorf(riverbank.EIDEMPOTENCYCONFLICT, "loan_no %q was used for a different loan", in.LoanNo).WithDetail("loan_id", existing.ID)
			}
			out = &Loan{existing}
			return nil
		}
		if !db.IsNotFound(err) {
			return fmt.Errorf("read loan by loan_no: %w", err)
		}
		// A loan starts after the newest business date with a run (closed
		// or closing); the shared lock keeps a run from starting meanwhile.
		if err := tx.LockCOBDatesShared(ctx); err != nil {
			return fmt.Errorf("lock business dates: %w", err)
		}
		latest, err := tx.LatestRunDate(ctx)
		if err != nil {
			return fmt.Errorf("read latest run date: %w", err)
		}
		if !start.After(latest) {
			first := latest.AddDate(0, 0, 1).Format(DateLayout)
			return riverbank.Errorf(riverbank.EDATENOTOPEN, "start_date %s is in a closed period: business dates through %s are closed (or closing); the first open date is %s",
				in.StartDate, latest.Format(DateLayout), first).WithDetail("first_open_date", first).WithDetail("field", "start_date")
		}
		if err := takeCreditTx(ctx, tx, in.BorrowerID, in.Currency, in.PrincipalMinor); err != nil {
			return err
		}
		entry, _, err := ledger.PostTx(ctx, tx, ledger.EntryInput{
			IdempotencyKey: DisbursementKey(in.LoanNo),
			Description:    fmt.Sprintf("disbursement of loan %s to %s", in.LoanNo, in.BorrowerID),
			Currency:       in.Currency,
			Postings: []ledger.PostingInput{
				{Account: ledger.AccountLoansPrincipal, AmountMinor: in.PrincipalMinor},
				{Account: ledger.AccountPlatformCash, AmountMinor: -in.PrincipalMinor},
			},
			CreateSystemAccounts: true,
		})
		if err != nil {
			return fmt.Errorf("post disbursement: %w", err)
		}
		var manufacturer *string
		if in.ManufacturerID != "" {
			manufacturer = &in.ManufacturerID
		}
		row, err := tx.InsertLoan(ctx, db.InsertLoanParams{
			LoanNo: in.LoanNo, RequestHash: hash, BorrowerID: in.BorrowerID, Currency: in.Currency,
			PrincipalMinor: in.PrincipalMinor, AnnualRateBps: int32(in.AnnualRateBps), PenaltyRateBps: int32(in.PenaltyRateBps),
			LateFeeMinor: in.LateFeeMinor, StartDate: start, DueDate: due, InterestMode: db.LoanInterestMode(in.InterestMode),
			DealerID: in.DealerID, ManufacturerID: manufacturer, ManufacturerShareBps: int32(in.ManufacturerShareBps),
			DisbursementEntryID: entry.ID,
		})
		if err != nil {
			return fmt.Errorf("insert loan: %w", err)
		}
		out, created = &Loan{row}, true
		return events.AppendTx(ctx, tx, events.LoanCreated, "loan", events.ID(row.ID), out)
	})
	return out, created, err
}

// GetLoan returns a loan.
func (s *Service) GetLoan(ctx context.Context, id int64) (*Loan, error) {
	r, err := s.store.Queries().GetLoan(ctx, id)
	if db.IsNotFound(err) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "loan %d not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get loan: %w", err)
	}
	return &Loan{r}, nil
}

// LoanFilter selects loans for a list.
type LoanFilter struct {
	BorrowerID string
	Status     string
	// BeforeID pages: loans with smaller ids (0: from the newest).
	BeforeID int64
	Limit    int
}

// ListLoans returns loans newest first.
func (s *Service) ListLoans(ctx context.Context, f LoanFilter) ([]*Loan, error) {
	p := db.ListLoansParams{BeforeID: f.BeforeID, Lim: int32(f.Limit)}
	if p.BeforeID <= 0 {
		p.BeforeID = 1<<63 - 1
	}
	if f.BorrowerID != "" {
		if !idRE.MatchString(f.BorrowerID) {
			return nil, invalid("borrower_id %q is not a valid id", f.BorrowerID).WithDetail("field", "borrower_id")
		}
		p.BorrowerID = &f.BorrowerID
	}
	if f.Status != "" {
		st := db.LoanStatus(f.Status)
		if !st.Valid() {
			return nil, invalid("status must be ACTIVE, OVERDUE or REPAID").WithDetail("field", "status")
		}
		p.Status = &st
	}
	rows, err := s.store.Queries().ListLoans(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("list loans: %w", err)
	}
	out := make([]*Loan, len(rows))
	for i, r := range rows {
		out[i] = &Loan{r}
	}
	return out, nil
}

// MonthAccrual is what a loan accrued in one month.
type MonthAccrual struct {
	Month                     time.Time
	InterestDealerMinor       int64
	InterestManufacturerMinor int64
	PenaltyMinor              int64
	LateFeeMinor              int64
	// Current is true for the month still accruing (kept on the loan row).
	Current bool
}

// Accruals returns a loan's accruals by month, oldest first: the finished
// months from the history, then the current month from the loan.
func (s *Service) Accruals(ctx context.Context, loanID int64) ([]MonthAccrual, error) {
	q := s.store.Queries()
	l, err := q.GetLoan(ctx, loanID)
	if db.IsNotFound(err) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "loan %d not found", loanID)
	}
	if err != nil {
		return nil, fmt.Errorf("get loan: %w", err)
	}
	rows, err := q.LoanAccrualMonths(ctx, loanID)
	if err != nil {
		return nil, fmt.Errorf("read accruals: %w", err)
	}
	out := make([]MonthAccrual, 0, len(rows)+1)
	for _, r := range rows {
		out = append(out, MonthAccrual{Month: r.Month, InterestDealerMinor: r.InterestDealerMinor, InterestManufacturerMinor: r.InterestManufacturerMinor,
			PenaltyMinor: r.PenaltyMinor, LateFeeMinor: r.LateFeeMinor})
	}
	if l.AccMonth != nil {
		out = append(out, MonthAccrual{Month: *l.AccMonth, InterestDealerMinor: l.MonthInterestDealerMinor, InterestManufacturerMinor: l.MonthInterestManufacturerMinor,
			PenaltyMinor: l.MonthPenaltyMinor, LateFeeMinor: l.MonthLateFeeMinor, Current: true})
	}
	return out, nil
}
