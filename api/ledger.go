package api

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"riverbank"
	"riverbank/internal/ledger"
)

// AccountBody is an account as the API shows it.
type AccountBody struct {
	Code            string    `json:"code" example:"merchant:m-1:payable"`
	Name            string    `json:"name"`
	Type            string    `json:"type" enum:"ASSET,LIABILITY,EQUITY,INCOME,EXPENSE"`
	Currency        string    `json:"currency" example:"CNY"`
	System          bool      `json:"system" doc:"True for the accounts riverbank creates at migration."`
	BalanceMinor    int64     `json:"balance_minor" doc:"Sum of applied postings (debits positive, credits negative)."`
	PendingMinor    int64     `json:"pending_minor" doc:"Sum of postings written but not yet applied. Omitted (0) in lists."`
	PendingPostings int64     `json:"pending_postings" doc:"Number of postings not yet applied. Omitted (0) in lists."`
	AppliedPostings int64     `json:"applied_postings" doc:"Number of postings applied so far."`
	CreatedAt       time.Time `json:"created_at"`
	UpdatedAt       time.Time `json:"updated_at"`
}

func accountBody(a *ledger.Account) AccountBody {
	return AccountBody{
		Code: a.Code, Name: a.Name, Type: a.Type, Currency: a.Currency, System: a.System,
		BalanceMinor: a.BalanceMinor, PendingMinor: a.PendingMinor, PendingPostings: a.PendingCount,
		AppliedPostings: a.AppliedPostings, CreatedAt: a.CreatedAt, UpdatedAt: a.UpdatedAt,
	}
}

// PostingBody is one posting.
type PostingBody struct {
	ID          int64      `json:"id"`
	EntryID     int64      `json:"entry_id"`
	Account     string     `json:"account"`
	AmountMinor int64      `json:"amount_minor" doc:"Positive for a debit, negative for a credit."`
	Description string     `json:"description,omitempty"`
	Status      string     `json:"status" enum:"PENDING,APPLIED"`
	CreatedAt   time.Time  `json:"created_at"`
	AppliedAt   *time.Time `json:"applied_at,omitempty"`
}

func postingBody(p ledger.Posting) PostingBody {
	st := "PENDING"
	if p.AppliedAt != nil {
		st = "APPLIED"
	}
	return PostingBody{ID: p.ID, EntryID: p.EntryID, Account: p.Account, AmountMinor: p.AmountMinor, Description: p.Description, Status: st, CreatedAt: p.CreatedAt, AppliedAt: p.AppliedAt}
}

// EntryBody is a journal entry with its postings.
type EntryBody struct {
	ID             int64         `json:"id"`
	IdempotencyKey string        `json:"idempotency_key"`
	Description    string        `json:"description"`
	Currency       string        `json:"currency"`
	Urgent         bool          `json:"urgent"`
	Status         string        `json:"status" enum:"PENDING,APPLIED"`
	CreatedAt      time.Time     `json:"created_at"`
	AppliedAt      *time.Time    `json:"applied_at,omitempty"`
	Postings       []PostingBody `json:"postings"`
}

func entryBody(e *ledger.Entry) EntryBody {
	out := EntryBody{ID: e.ID, IdempotencyKey: e.IdempotencyKey, Description: e.Description, Currency: e.Currency, Urgent: e.Urgent, Status: e.Status, CreatedAt: e.CreatedAt, AppliedAt: e.AppliedAt, Postings: make([]PostingBody, len(e.Postings))}
	for i, p := range e.Postings {
		out.Postings[i] = postingBody(p)
	}
	return out
}

type createAccountInput struct {
	Body struct {
		Code     string `json:"code" minLength:"1" maxLength:"128" pattern:"^[a-z0-9][a-z0-9_.:-]*$" doc:"Unique account code; also the idempotency key." example:"expense:fees"`
		Name     string `json:"name" minLength:"1" maxLength:"200"`
		Type     string `json:"type" enum:"ASSET,LIABILITY,EQUITY,INCOME,EXPENSE"`
		Currency string `json:"currency" pattern:"^[A-Z]{3}$" example:"CNY"`
	}
}

type accountOutput struct {
	Status int
	Body   AccountBody
}

type accountCodeInput struct {
	Code     string `path:"code" maxLength:"128" doc:"Account code, e.g. platform:cash."`
	Currency string `query:"currency" pattern:"^[A-Z]{3}$" doc:"ISO 4217 currency of the account. May be omitted when the code exists in one currency only; otherwise 409 currency_required names the currencies."`
}

type listAccountsInput struct {
	PageParams
}

type listAccountsOutput struct {
	Body struct {
		Accounts   []AccountBody `json:"accounts"`
		NextCursor string        `json:"next_cursor,omitempty"`
	}
}

type accountPostingsInput struct {
	Code     string `path:"code" maxLength:"128"`
	Currency string `query:"currency" pattern:"^[A-Z]{3}$" doc:"ISO 4217 currency of the account; may be omitted when the code exists in one currency only."`
	PageParams
}

type postingsOutput struct {
	Body struct {
		Postings   []PostingBody `json:"postings"`
		NextCursor string        `json:"next_cursor,omitempty"`
	}
}

type createEntryInput struct {
	Body struct {
		IdempotencyKey string             `json:"idempotency_key" minLength:"1" maxLength:"200" doc:"Unique per entry: a retry with the same key and payload returns the original entry."`
		Description    string             `json:"description,omitempty" maxLength:"500"`
		Urgent         bool               `json:"urgent,omitempty" doc:"Apply now (enqueue ledger.apply for each account in this transaction) instead of at the next sweep (within a minute)."`
		Currency       string             `json:"currency,omitempty" pattern:"^[A-Z]{3}$" doc:"The entry's currency (ISO 4217). May be omitted when every account code exists in one currency only; otherwise 409 currency_required." example:"CNY"`
		Postings       []PostingInputBody `json:"postings" minItems:"2" maxItems:"100"`
	}
}

// PostingInputBody is one posting of a new journal entry.
type PostingInputBody struct {
	Account     string `json:"account" minLength:"1" maxLength:"128"`
	AmountMinor int64  `json:"amount_minor" doc:"Positive for a debit, negative for a credit; never zero."`
}

type entryOutput struct {
	Status int
	Body   EntryBody
}

type entryIDInput struct {
	ID int64 `path:"id" minimum:"1"`
}

// CurrencyTotalsBody is one currency's line of the trial balance.
type CurrencyTotalsBody struct {
	Currency          string `json:"currency"`
	BalanceTotalMinor int64  `json:"balance_total_minor"`
	PendingTotalMinor int64  `json:"pending_total_minor"`
	Accounts          int64  `json:"accounts"`
	Balanced          bool   `json:"balanced" doc:"Both totals are zero."`
}

// MismatchBody is an account whose balance differs from its postings.
type MismatchBody struct {
	Code            string `json:"code"`
	Currency        string `json:"currency"`
	BalanceMinor    int64  `json:"balance_minor"`
	AppliedSumMinor int64  `json:"applied_sum_minor"`
}

// TrialBalanceBody is the ledger's self-check.
type TrialBalanceBody struct {
	Balanced          bool                 `json:"balanced" doc:"Every currency balances and every account's balance equals the sum of its applied postings."`
	Currencies        []CurrencyTotalsBody `json:"currencies"`
	AccountMismatches []MismatchBody       `json:"account_mismatches" doc:"Accounts whose balance differs from the sum of their applied postings (expected empty)."`
}

func (h *handlers) registerLedger(api huma.API) {
	tags := []string{"Ledger"}
	huma.Register(api, huma.Operation{OperationID: "create-account", Method: http.MethodPost, Path: "/v1/accounts", Summary: "Create an account", Tags: tags,
		Description:   "Creates an account. The code is the idempotency key: repeating an identical request returns 200 with the account; a different name, type or currency for an existing code is 409 idempotency_conflict.",
		DefaultStatus: http.StatusCreated,
		Metadata:      answers(codes(riverbank.EIDEMPOTENCYCONFLICT, riverbank.ERESERVEDCODE), replayOK("the account"))}, h.createAccount)
	huma.Register(api, huma.Operation{OperationID: "list-accounts", Method: http.MethodGet, Path: "/v1/accounts", Summary: "List accounts by code", Tags: tags}, h.listAccounts)
	huma.Register(api, huma.Operation{OperationID: "get-account", Method: http.MethodGet, Path: "/v1/accounts/{code}", Summary: "Get an account with its balance and pending sum", Tags: tags,
		Metadata: answers(codes(riverbank.ENOTFOUND, riverbank.ECURRENCYREQUIRED), nil)}, h.getAccount)
	huma.Register(api, huma.Operation{OperationID: "list-account-postings", Method: http.MethodGet, Path: "/v1/accounts/{code}/postings", Summary: "An account's postings, newest first", Tags: tags,
		Metadata: answers(codes(riverbank.ENOTFOUND, riverbank.ECURRENCYREQUIRED), nil)}, h.listAccountPostings)
	huma.Register(api, huma.Operation{OperationID: "create-journal-entry", Method: http.MethodPost, Path: "/v1/journal-entries", Summary: "Write a balanced journal entry (applied asynchronously)", Tags: tags,
		Description:   "Validates and writes the entry and its postings as PENDING in one transaction: at least two postings, non-zero amounts, existing accounts of one currency, summing to exactly 0 (else 422). ledger.apply jobs add postings to balances in per-account batches; urgent entries are enqueued at once, others by the sweep within a minute.",
		DefaultStatus: http.StatusCreated,
		Metadata: answers(codes(riverbank.EIDEMPOTENCYCONFLICT, riverbank.ECURRENCYREQUIRED, riverbank.EUNPROCESSABLE, riverbank.EBALANCEOUTOFRANGE),
			replayOK("the original entry as it is now"))}, h.createEntry)
	huma.Register(api, huma.Operation{OperationID: "get-journal-entry", Method: http.MethodGet, Path: "/v1/journal-entries/{id}", Summary: "Get a journal entry with its postings", Tags: tags,
		Metadata: answers(codes(riverbank.ENOTFOUND), nil)}, h.getEntry)
	huma.Register(api, huma.Operation{OperationID: "get-trial-balance", Method: http.MethodGet, Path: "/v1/ledger/trial-balance", Summary: "Totals per currency and a check of every balance against its postings", Tags: tags}, h.getTrialBalance)
}

func (h *handlers) createAccount(ctx context.Context, in *createAccountInput) (*accountOutput, error) {
	a, created, err := h.Ledger.CreateAccount(ctx, ledger.AccountInput{Code: in.Body.Code, Name: in.Body.Name, Type: in.Body.Type, Currency: in.Body.Currency})
	if err != nil {
		return nil, err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return &accountOutput{Status: status, Body: accountBody(a)}, nil
}

func (h *handlers) getAccount(ctx context.Context, in *accountCodeInput) (*accountOutput, error) {
	a, err := h.Ledger.GetAccount(ctx, in.Code, in.Currency)
	if err != nil {
		return nil, err
	}
	return &accountOutput{Status: http.StatusOK, Body: accountBody(a)}, nil
}

func (h *handlers) listAccounts(ctx context.Context, in *listAccountsInput) (*listAccountsOutput, error) {
	after, afterCurrency := "", ""
	if in.Cursor != "" {
		key, err := decodeCursor(in.Cursor)
		if err != nil {
			return nil, err
		}
		// "code currency": a code has no spaces; cursors of one currency
		// per code (before currencies) carry the code alone.
		after, afterCurrency, _ = strings.Cut(key, " ")
	}
	limit := in.limit()
	accs, err := h.Ledger.ListAccounts(ctx, after, afterCurrency, limit)
	if err != nil {
		return nil, err
	}
	out := &listAccountsOutput{}
	out.Body.Accounts = make([]AccountBody, len(accs))
	for i, a := range accs {
		out.Body.Accounts[i] = accountBody(a)
	}
	if len(accs) == limit {
		last := accs[len(accs)-1]
		out.Body.NextCursor = encodeCursor(last.Code + " " + last.Currency)
	}
	return out, nil
}

func (h *handlers) listAccountPostings(ctx context.Context, in *accountPostingsInput) (*postingsOutput, error) {
	var before int64
	if in.Cursor != "" {
		var err error
		if before, err = decodeIDCursor(in.Cursor); err != nil {
			return nil, err
		}
	}
	limit := in.limit()
	ps, err := h.Ledger.AccountPostings(ctx, in.Code, in.Currency, before, limit)
	if err != nil {
		return nil, err
	}
	out := &postingsOutput{}
	out.Body.Postings = make([]PostingBody, len(ps))
	for i, p := range ps {
		out.Body.Postings[i] = postingBody(p)
	}
	if len(ps) == limit {
		out.Body.NextCursor = encodeIDCursor(ps[len(ps)-1].ID)
	}
	return out, nil
}

func (h *handlers) createEntry(ctx context.Context, in *createEntryInput) (*entryOutput, error) {
	ein := ledger.EntryInput{IdempotencyKey: in.Body.IdempotencyKey, Description: in.Body.Description, Urgent: in.Body.Urgent, Currency: in.Body.Currency}
	for _, p := range in.Body.Postings {
		ein.Postings = append(ein.Postings, ledger.PostingInput{Account: p.Account, AmountMinor: p.AmountMinor})
	}
	e, created, err := h.Ledger.Post(ctx, ein)
	if err != nil {
		return nil, err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return &entryOutput{Status: status, Body: entryBody(e)}, nil
}

func (h *handlers) getEntry(ctx context.Context, in *entryIDInput) (*entryOutput, error) {
	e, err := h.Ledger.GetEntry(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &entryOutput{Status: http.StatusOK, Body: entryBody(e)}, nil
}

type trialBalanceOutput struct {
	Body TrialBalanceBody
}

func (h *handlers) getTrialBalance(ctx context.Context, _ *struct{}) (*trialBalanceOutput, error) {
	tb, err := h.Ledger.TrialBalance(ctx)
	if err != nil {
		return nil, err
	}
	out := &trialBalanceOutput{Body: TrialBalanceBody{Balanced: tb.Balanced, Currencies: []CurrencyTotalsBody{}, AccountMismatches: []MismatchBody{}}}
	for _, c := range tb.Currencies {
		out.Body.Currencies = append(out.Body.Currencies, CurrencyTotalsBody(c))
	}
	for _, m := range tb.Mismatches {
		out.Body.AccountMismatches = append(out.Body.AccountMismatches, MismatchBody(m))
	}
	return out, nil
}
