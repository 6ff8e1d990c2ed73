package ledger

import (
	"context"
	"fmt"
	"slices"
	"unicode/utf8"

	"riverbank"
	"riverbank/internal/db"
)

// AccountInput creates an account.
type AccountInput struct {
	Code     string
	Name     string
	Type     string
	Currency string
}

// Validate checks an account's shape.
func (in AccountInput) Validate() error {
	if !codeRE.MatchString(in.Code) {
		return invalid("code %q must be 1-128 characters of a-z, 0-9, '_', '.', ':', '-', starting with a letter or digit", in.Code)
	}
	if l := utf8.RuneCountInString(in.Name); l < 1 || l > 200 || !riverbank.ValidText(in.Name) {
		return invalid("name is required: 1..200 characters of valid UTF-8 without NUL")
	}
	if !slices.Contains(AccountTypes, in.Type) {
		return invalid("type must be one of ASSET, LIABILITY, EQUITY, INCOME, EXPENSE")
	}
	if !currencyRE.MatchString(in.Currency) {
		return invalid("currency %q is not an ISO 4217 code (three capital letters)", in.Currency)
	}
	return nil
}

// CreateAccount creates an account. The code is the idempotency key: the
// same code with the same name, type and currency returns the existing
// account (created=false); anything else is an idempotency_conflict.
func (s *Service) CreateAccount(ctx context.Context, in AccountInput) (*Account, bool, error) {
	if err := in.Validate(); err != nil {
		return nil, false, err
	}
	q := s.store.Queries()
	row, err := q.InsertAccount(ctx, db.InsertAccountParams{Code: in.Code, Name: in.Name, Type: db.LedgerAccountType(in.Type), Currency: in.Currency})
	if err == nil {
		return accountFromRow(row), true, nil
	}
	if !db.IsNotFound(err) {
		return nil, false, fmt.Errorf("insert account: %w", err)
	}
	existing, err := s.GetAccount(ctx, in.Code)
	if err != nil {
		return nil, false, err
	}
	if existing.Name != in.Name || existing.Type != in.Type || existing.Currency != in.Currency {
		return nil, false, riverbank.Errorf(riverbank.EIDEMPOTENCYCONFLICT, "account %q already exists with a different name, type or currency", in.Code)
	}
	return existing, false, nil
}

func accountFromRow(r db.LedgerAccount) *Account {
	return &Account{
		ID: r.ID, Code: r.Code, Name: r.Name, Type: string(r.Type), Currency: r.Currency, System: r.System,
		BalanceMinor:    r.BalanceMinor,
		AppliedPostings: r.AppliedPostings, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

// GetAccount returns an account with its applied balance and the sum of
// its pending postings.
func (s *Service) GetAccount(ctx context.Context, code string) (*Account, error) {
	if !codeRE.MatchString(code) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "account %q not found", code)
	}
	r, err := s.store.Queries().GetAccountWithPending(ctx, code)
	if db.IsNotFound(err) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "account %q not found", code)
	}
	if err != nil {
		return nil, fmt.Errorf("get account: %w", err)
	}
	a := accountFromRow(r.LedgerAccount)
	a.PendingMinor, a.PendingCount = r.PendingMinor, r.PendingCount
	return a, nil
}

// ListAccounts returns accounts ordered by code after afterCode. Pending
// sums are not included (they cost a probe per account); fetch one account
// for them.
func (s *Service) ListAccounts(ctx context.Context, afterCode string, limit int) ([]*Account, error) {
	rows, err := s.store.Queries().ListAccounts(ctx, db.ListAccountsParams{AfterCode: afterCode, Lim: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	out := make([]*Account, len(rows))
	for i, r := range rows {
		out[i] = accountFromRow(r)
	}
	return out, nil
}

// AccountPostings returns an account's postings newest first, with ids
// below beforeID (0 = from the newest).
func (s *Service) AccountPostings(ctx context.Context, code string, beforeID int64, limit int) ([]Posting, error) {
	if !codeRE.MatchString(code) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "account %q not found", code)
	}
	q := s.store.Queries()
	acc, err := q.GetAccountByCode(ctx, code)
	if db.IsNotFound(err) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "account %q not found", code)
	}
	if err != nil {
		return nil, fmt.Errorf("get account: %w", err)
	}
	if beforeID <= 0 {
		beforeID = 1<<63 - 1
	}
	rows, err := q.AccountPostings(ctx, db.AccountPostingsParams{AccountID: acc.ID, BeforeID: beforeID, Lim: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list postings: %w", err)
	}
	out := make([]Posting, len(rows))
	for i, r := range rows {
		out[i] = Posting{ID: r.ID, EntryID: r.EntryID, Account: code, AmountMinor: r.AmountMinor, Description: r.Description, CreatedAt: r.CreatedAt, AppliedAt: r.AppliedAt}
	}
	return out, nil
}

// CurrencyTotals is one currency's line of the trial balance.
type CurrencyTotals struct {
	Currency          string
	BalanceTotalMinor int64
	PendingTotalMinor int64
	Accounts          int64
	Balanced          bool
}

// Mismatch is an account whose stored balance differs from the sum of its
// applied postings.
type Mismatch struct {
	Code            string
	BalanceMinor    int64
	AppliedSumMinor int64
}

// TrialBalance is the ledger's self-check.
type TrialBalance struct {
	Currencies []CurrencyTotals
	// Mismatches lists accounts whose balance is not the sum of their
	// applied postings (always empty unless something is badly wrong).
	Mismatches []Mismatch
	// Balanced is true when every currency balances and nothing mismatches.
	Balanced bool
}

// TrialBalance computes totals per currency and checks every account's
// balance against its applied postings. It reads every posting once: an
// operator check, not a hot path.
func (s *Service) TrialBalance(ctx context.Context) (*TrialBalance, error) {
	q := s.store.Queries()
	rows, err := q.TrialBalanceByCurrency(ctx)
	if err != nil {
		return nil, fmt.Errorf("trial balance: %w", err)
	}
	tb := &TrialBalance{Balanced: true, Currencies: []CurrencyTotals{}, Mismatches: []Mismatch{}}
	for _, r := range rows {
		ct := CurrencyTotals{Currency: r.Currency, BalanceTotalMinor: r.BalanceTotalMinor, PendingTotalMinor: r.PendingTotalMinor, Accounts: r.Accounts}
		ct.Balanced = ct.BalanceTotalMinor == 0 && ct.PendingTotalMinor == 0
		tb.Balanced = tb.Balanced && ct.Balanced
		tb.Currencies = append(tb.Currencies, ct)
	}
	mm, err := q.AccountBalanceMismatches(ctx)
	if err != nil {
		return nil, fmt.Errorf("check balances: %w", err)
	}
	for _, m := range mm {
		tb.Mismatches = append(tb.Mismatches, Mismatch{Code: m.Code, BalanceMinor: m.BalanceMinor, AppliedSumMinor: m.AppliedSumMinor})
		tb.Balanced = false
	}
	return tb, nil
}
