package ledger

import (
	"context"
	"fmt"
	"slices"
	"strings"
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

// CreateAccount creates an account through the API. The code is the
// idempotency key: the same code with the same name, type and currency
// returns the existing account (created=false); a code that exists with
// another name or type, or in another currency, is 409
// idempotency_conflict (an account created by the API has one currency).
// Codes of system accounts and merchant payables are reserved for internal
// writers (422 reserved_code).
func (s *Service) CreateAccount(ctx context.Context, in AccountInput) (*Account, bool, error) {
	if err := in.Validate(); err != nil {
		return nil, false, err
	}
	if IsReservedCode(in.Code) {
		return nil, false, riverbank.Errorf(riverbank.ERESERVEDCODE, "code %q is reserved: codes starting with %s are created by riverbank itself", in.Code, strings.Join(reservedPrefixes, ", ")).
			WithDetail("reserved_prefixes", reservedPrefixes)
	}
	var (
		out     *Account
		created bool
	)
	err := s.store.InTx(ctx, func(tx *db.Tx) error {
		// Serialise creators of one code, so two requests for the same code
		// in different currencies cannot both succeed.
		if err := tx.LockAccountCode(ctx, in.Code); err != nil {
			return fmt.Errorf("lock account code: %w", err)
		}
		cs, err := tx.AccountCurrencies(ctx, in.Code)
		if err != nil {
			return fmt.Errorf("read account currencies: %w", err)
		}
		if len(cs) > 0 && !slices.Contains(cs, in.Currency) {
			return riverbank.Errorf(riverbank.EIDEMPOTENCYCONFLICT, "account %q already exists in %s", in.Code, strings.Join(cs, ", ")).WithDetail("currencies", cs)
		}
		row, err := tx.InsertAccount(ctx, db.InsertAccountParams{Code: in.Code, Name: in.Name, Type: db.LedgerAccountType(in.Type), Currency: in.Currency})
		if err == nil {
			out, created = accountFromRow(row), true
			return nil
		}
		if !db.IsNotFound(err) {
			return fmt.Errorf("insert account: %w", err)
		}
		existing, err := tx.GetAccountByCode(ctx, db.GetAccountByCodeParams{Code: in.Code, Currency: in.Currency})
		if err != nil {
			return fmt.Errorf("read account: %w", err)
		}
		if existing.Name != in.Name || string(existing.Type) != in.Type {
			return riverbank.Errorf(riverbank.EIDEMPOTENCYCONFLICT, "account %q already exists with a different name or type", in.Code)
		}
		out = accountFromRow(existing)
		return nil
	})
	return out, created, err
}

// resolveCurrency picks the account (code, currency) a read names: the
// currency given, or the only currency the code exists in. A code in
// several currencies without one is 409 currency_required naming them.
func resolveCurrency(ctx context.Context, q *db.Queries, code, currency string) (string, error) {
	if !codeRE.MatchString(code) {
		return "", riverbank.Errorf(riverbank.ENOTFOUND, "account %q not found", code)
	}
	if currency != "" {
		if !currencyRE.MatchString(currency) {
			return "", invalid("currency %q is not an ISO 4217 code (three capital letters)", currency)
		}
		return currency, nil
	}
	cs, err := q.AccountCurrencies(ctx, code)
	if err != nil {
		return "", fmt.Errorf("read account currencies: %w", err)
	}
	switch len(cs) {
	case 0:
		return "", riverbank.Errorf(riverbank.ENOTFOUND, "account %q not found", code)
	case 1:
		return cs[0], nil
	}
	return "", riverbank.Errorf(riverbank.ECURRENCYREQUIRED, "account %q exists in %s: pass ?currency=", code, strings.Join(cs, ", ")).WithDetail("currencies", cs)
}

func accountFromRow(r db.LedgerAccount) *Account {
	return &Account{
		ID: r.ID, Code: r.Code, Name: r.Name, Type: string(r.Type), Currency: r.Currency, System: r.System,
		BalanceMinor:    r.BalanceMinor,
		AppliedPostings: r.AppliedPostings, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

// GetAccount returns an account with its applied balance and the sum of
// its pending postings. currency may be empty when the code exists in one
// currency only.
func (s *Service) GetAccount(ctx context.Context, code, currency string) (*Account, error) {
	q := s.store.Queries()
	currency, err := resolveCurrency(ctx, q, code, currency)
	if err != nil {
		return nil, err
	}
	r, err := q.GetAccountWithPending(ctx, db.GetAccountWithPendingParams{Code: code, Currency: currency})
	if db.IsNotFound(err) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "account %q not found in %s", code, currency)
	}
	if err != nil {
		return nil, fmt.Errorf("get account: %w", err)
	}
	a := accountFromRow(r.LedgerAccount)
	a.PendingMinor, a.PendingCount = r.PendingMinor, r.PendingCount
	return a, nil
}

// ListAccounts returns accounts ordered by (code, currency) after
// (afterCode, afterCurrency). Pending sums are not included (they cost a
// probe per account); fetch one account for them.
func (s *Service) ListAccounts(ctx context.Context, afterCode, afterCurrency string, limit int) ([]*Account, error) {
	rows, err := s.store.Queries().ListAccounts(ctx, db.ListAccountsParams{AfterCode: afterCode, AfterCurrency: afterCurrency, Lim: int32(limit)})
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
func (s *Service) AccountPostings(ctx context.Context, code, currency string, beforeID int64, limit int) ([]Posting, error) {
	q := s.store.Queries()
	currency, err := resolveCurrency(ctx, q, code, currency)
	if err != nil {
		return nil, err
	}
	acc, err := q.GetAccountByCode(ctx, db.GetAccountByCodeParams{Code: code, Currency: currency})
	if db.IsNotFound(err) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "account %q not found in %s", code, currency)
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
		out[i] = Posting{ID: r.ID, EntryID: r.EntryID, Account: code, Currency: currency, AmountMinor: r.AmountMinor, Description: r.Description, CreatedAt: r.CreatedAt, AppliedAt: r.AppliedAt}
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
	Currency        string
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
		ct := CurrencyTotals{Currency: r.Currency, BalanceTotalMinor: r.BalanceTotalMinor, PendingTotalMinor: r.PendingTotalMinor, Accounts: r.Accounts, Balanced: r.Balanced}
		tb.Balanced = tb.Balanced && ct.Balanced
		tb.Currencies = append(tb.Currencies, ct)
	}
	mm, err := q.AccountBalanceMismatches(ctx)
	if err != nil {
		return nil, fmt.Errorf("check balances: %w", err)
	}
	for _, m := range mm {
		tb.Mismatches = append(tb.Mismatches, Mismatch{Code: m.Code, Currency: m.Currency, BalanceMinor: m.BalanceMinor, AppliedSumMinor: m.AppliedSumMinor})
		tb.Balanced = false
	}
	return tb, nil
}
