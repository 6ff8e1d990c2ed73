package lending

import (
	"context"
	"fmt"
	"time"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/events"
)

// CreditLine is a borrower's credit line.
type CreditLine struct {
	BorrowerID string
	Currency   string
	LimitMinor int64
	UsedMinor  int64
	Frozen     bool
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// AvailableMinor is what a new loan may take: limit − used, and 0 when the
// limit was lowered below what is used.
func (c *CreditLine) AvailableMinor() int64 {
	return max(0, c.LimitMinor-c.UsedMinor)
}

func creditLineFromRow(r db.CreditLine) *CreditLine {
	return &CreditLine{BorrowerID: r.BorrowerID, Currency: r.Currency, LimitMinor: r.LimitMinor, UsedMinor: r.UsedMinor, Frozen: r.Frozen, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
}

// CreditLineInput is PUT /v1/credit-lines/{borrower_id}.
type CreditLineInput struct {
	BorrowerID string
	LimitMinor int64
	Currency   string
	Frozen     bool
}

// Validate checks the shape of a credit line.
func (in CreditLineInput) Validate() error {
	if !idRE.MatchString(in.BorrowerID) {
		return invalid("borrower_id %q must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':', '@', '-', starting with a letter or digit", in.BorrowerID).WithDetail("field", "borrower_id")
	}
	if in.LimitMinor < 0 || in.LimitMinor > MaxAmountMinor {
		return invalid("limit_minor must be between 0 and %d", int64(MaxAmountMinor)).WithDetail("field", "limit_minor")
	}
	if !currencyRE.MatchString(in.Currency) {
		return invalid("currency %q is not an ISO 4217 code (three capital letters)", in.Currency).WithDetail("field", "currency")
	}
	return nil
}

// PutCreditLine creates a credit line (created=true) or sets its limit and
// frozen flag. Rules: the currency is fixed for life (another currency is
// 409 conflict: loans and restorations in flight are in the old one);
// lowering the limit below what is used is allowed — available becomes 0,
// no new loan fits, nothing is clawed back, and restorations bring used
// down as loans are repaid; freezing stops new loans and makes pending
// restorations wait (they retry until unfrozen or discarded).
func (s *Service) PutCreditLine(ctx context.Context, in CreditLineInput) (*CreditLine, bool, error) {
	if err := in.Validate(); err != nil {
		return nil, false, err
	}
	var (
		out     *CreditLine
		created bool
	)
	err := s.store.InTx(ctx, func(tx *db.Tx) error {
		row, err := tx.UpsertCreditLine(ctx, db.UpsertCreditLineParams{BorrowerID: in.BorrowerID, Currency: in.Currency, LimitMinor: in.LimitMinor, Frozen: in.Frozen})
		if db.IsNotFound(err) {
			cur, err := tx.GetCreditLine(ctx, in.BorrowerID)
			if err != nil {
				return fmt.Errorf("read credit line: %w", err)
			}
			return riverbank.Errorf(riverbank.ECONFLICT, "the credit line of %s is in %s; its currency cannot change", in.BorrowerID, cur.Currency).WithDetail("currency", cur.Currency)
		}
		if err != nil {
			return fmt.Errorf("upsert credit line: %w", err)
		}
		out = &CreditLine{BorrowerID: row.BorrowerID, Currency: row.Currency, LimitMinor: row.LimitMinor, UsedMinor: row.UsedMinor, Frozen: row.Frozen, CreatedAt: row.CreatedAt, UpdatedAt: row.UpdatedAt}
		created = row.Inserted
		return events.AppendTx(ctx, tx, events.CreditLineChanged, "credit_line", out.BorrowerID, out)
	})
	return out, created, err
}

// GetCreditLine returns a borrower's credit line.
func (s *Service) GetCreditLine(ctx context.Context, borrowerID string) (*CreditLine, error) {
	if !idRE.MatchString(borrowerID) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "no credit line for borrower %q", borrowerID)
	}
	r, err := s.store.Queries().GetCreditLine(ctx, borrowerID)
	if db.IsNotFound(err) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "no credit line for borrower %q", borrowerID)
	}
	if err != nil {
		return nil, fmt.Errorf("get credit line: %w", err)
	}
	return creditLineFromRow(r), nil
}

// takeCreditTx takes amount from the borrower's line in currency with one
// conditional update that can never pass the limit, and explains a
// refusal: 409 insufficient_credit for a missing, frozen or short line, 422
// for a loan in another currency than its line's.
func takeCreditTx(ctx context.Context, tx *db.Tx, borrowerID, currency string, amount int64) error {
	_, err := tx.TakeCredit(ctx, db.TakeCreditParams{BorrowerID: borrowerID, Currency: currency, Amount: amount})
	if err == nil {
		return nil
	}
	if !db.IsNotFound(err) {
		return fmt.Errorf("take credit: %w", err)
	}
	line, err := tx.GetCreditLine(ctx, borrowerID)
	if db.IsNotFound(err) {
		return riverbank.Errorf(riverbank.EINSUFFICIENTCREDIT, "borrower %s has no credit line", borrowerID).WithDetail("reason", "no_credit_line")
	}
	if err != nil {
		return fmt.Errorf("read credit line: %w", err)
	}
	switch {
	case line.Currency != currency:
		return invalid("the loan is in %s but the credit line of %s is in %s", currency, borrowerID, line.Currency).WithDetail("field", "currency").WithDetail("credit_line_currency", line.Currency)
	case line.Frozen:
		return riverbank.Errorf(riverbank.EINSUFFICIENTCREDIT, "the credit line of %s is frozen", borrowerID).WithDetail("reason", "frozen")
	}
	available := creditLineFromRow(line).AvailableMinor()
	return riverbank.Errorf(riverbank.EINSUFFICIENTCREDIT, "the credit line of %s has %d %s available, the loan needs %d", borrowerID, available, currency, amount).
		WithDetail("reason", "insufficient").WithDetail("available_minor", available)
}
