package api_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"

	"riverbank/api"
	"riverbank/internal/db"
	"riverbank/internal/ledger"
)

func accountRequest(code, name, typ, currency string) map[string]any {
	return map[string]any{"code": code, "name": name, "type": typ, "currency": currency}
}

// TestCurrencyAPIReservedCodes: the codes of system accounts and merchant
// payables belong to riverbank's internal writers in every currency; the API
// refuses them and writes nothing.
func TestCurrencyAPIReservedCodes(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		code     string
		typ      string
		currency string
	}{
		{"platform cash in a currency it does not exist in yet", ledger.AccountPlatformCash, "ASSET", "USD"},
		{"platform cash in its migration currency", ledger.AccountPlatformCash, "ASSET", "CNY"},
		{"a merchant payable", "merchant:x:payable", "LIABILITY", "USD"},
		{"any merchant code", "merchant:x", "LIABILITY", "CNY"},
		{"any loans code", "loans:x", "ASSET", "EUR"},
		{"any income code", "income:x", "INCOME", "CNY"},
		{"any platform code", "platform:x", "ASSET", "CNY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupLedgerAPI(t)
			before := b.writes(t)
			p := b.requireProblem(t, b.api.Post("/v1/accounts", accountRequest(tt.code, "Mine", tt.typ, tt.currency)), "reserved_code", http.StatusUnprocessableEntity)
			require.NotEmpty(t, p.Details["reserved_prefixes"])
			require.Equal(t, before, b.writes(t))
			require.Zero(t, b.countRows(t, "SELECT count(*) FROM ledger_account WHERE code = $1 AND currency = $2 AND NOT system", tt.code, tt.currency))
		})
	}
}

// countRows runs a query that returns one integer in the test's transaction.
func (b *ledgerAPIBundle) countRows(t *testing.T, query string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, b.tx.QueryRow(b.ctx, query, args...).Scan(&n))
	return n
}

// TestCurrencyAPIAccountInOneCurrency: an account the API creates has one
// currency: the same code in another is an idempotency conflict, and reads
// of it in another currency find nothing.
func TestCurrencyAPIAccountInOneCurrency(t *testing.T) {
	t.Parallel()
	b := setupLedgerAPI(t)
	code := b.code("acc")
	rec := b.api.Post("/v1/accounts", accountRequest(code, "Account", "ASSET", "CNY"))
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())

	before := b.writes(t)
	p := b.requireProblem(t, b.api.Post("/v1/accounts", accountRequest(code, "Account", "ASSET", "USD")), "idempotency_conflict", http.StatusConflict)
	require.Equal(t, []any{"CNY"}, p.Details["currencies"])
	require.Equal(t, before, b.writes(t))

	rec = b.api.Get("/v1/accounts/" + code + "?currency=CNY")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, "CNY", decodeLedgerJSON[api.AccountBody](t, rec).Currency)
	rec = b.api.Get("/v1/accounts/" + code)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, "CNY", decodeLedgerJSON[api.AccountBody](t, rec).Currency)
	b.requireProblem(t, b.api.Get("/v1/accounts/"+code+"?currency=EUR"), "not_found", http.StatusNotFound)
	b.requireProblem(t, b.api.Get("/v1/accounts/"+code+"/postings?currency=EUR"), "not_found", http.StatusNotFound)
}

// TestCurrencyAPIBadCurrency: a currency that is not three capital letters
// is a validation error wherever it appears; an entry whose currency is not
// its accounts' is unprocessable. Nothing is written.
func TestCurrencyAPIBadCurrency(t *testing.T) {
	t.Parallel()

	entry := func(b *ledgerAPIBundle, currency string) map[string]any {
		body := ledgerEntryBody("k-"+b.suffix, true, b.code("a"), 10, b.code("b"), -10)
		body["currency"] = currency
		return body
	}
	tests := []struct {
		name    string
		request func(b *ledgerAPIBundle) *httptest.ResponseRecorder
		code    string
	}{
		{"account read with a lower-case currency", func(b *ledgerAPIBundle) *httptest.ResponseRecorder {
			return b.api.Get("/v1/accounts/" + b.code("a") + "?currency=usd")
		}, "validation_failed"},
		{"account read with a two-letter currency", func(b *ledgerAPIBundle) *httptest.ResponseRecorder {
			return b.api.Get("/v1/accounts/" + b.code("a") + "?currency=US")
		}, "validation_failed"},
		{"postings read with a lower-case currency", func(b *ledgerAPIBundle) *httptest.ResponseRecorder {
			return b.api.Get("/v1/accounts/" + b.code("a") + "/postings?currency=usd")
		}, "validation_failed"},
		{"entry with a two-letter currency", func(b *ledgerAPIBundle) *httptest.ResponseRecorder {
			return b.api.Post("/v1/journal-entries", entry(b, "US"))
		}, "validation_failed"},
		{"entry with a lower-case currency", func(b *ledgerAPIBundle) *httptest.ResponseRecorder {
			return b.api.Post("/v1/journal-entries", entry(b, "cny"))
		}, "validation_failed"},
		{"entry in another currency than its accounts", func(b *ledgerAPIBundle) *httptest.ResponseRecorder {
			return b.api.Post("/v1/journal-entries", entry(b, "USD"))
		}, "unprocessable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupLedgerAPI(t)
			b.createAccount(t, b.code("a"), "ASSET", "CNY")
			b.createAccount(t, b.code("b"), "LIABILITY", "CNY")
			before := b.writes(t)
			b.requireProblem(t, tt.request(b), tt.code, http.StatusUnprocessableEntity)
			require.Equal(t, before, b.writes(t))
		})
	}
}

// TestCurrencyAPICodeInTwoCurrencies: once an internal writer has created
// platform:cash in USD, reads and entries that name the code without a
// currency are 409 currency_required naming both; with one they work.
func TestCurrencyAPICodeInTwoCurrencies(t *testing.T) {
	t.Parallel()
	b := setupLedgerAPI(t)
	b.createAccount(t, b.code("usd"), "INCOME", "USD")
	b.createAccount(t, b.code("cny"), "LIABILITY", "CNY")
	err := b.store.InTx(b.ctx, func(tx *db.Tx) error {
		_, _, err := ledger.PostTx(b.ctx, tx, ledger.EntryInput{
			IdempotencyKey: ledger.SystemKeyPrefix + b.code("seed"), Currency: "USD", CreateSystemAccounts: true,
			Postings: []ledger.PostingInput{{Account: ledger.AccountPlatformCash, AmountMinor: 250}, {Account: b.code("usd"), AmountMinor: -250}},
		})
		return err
	})
	require.NoError(t, err)
	cash := "/v1/accounts/" + ledger.AccountPlatformCash

	for _, path := range []string{cash, cash + "/postings"} {
		p := b.requireProblem(t, b.api.Get(path), "currency_required", http.StatusConflict)
		require.Equal(t, []any{"CNY", "USD"}, p.Details["currencies"], path)
	}

	rec := b.api.Get(cash + "?currency=USD")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	usd := decodeLedgerJSON[api.AccountBody](t, rec)
	require.Equal(t, "USD", usd.Currency)
	require.Equal(t, "ASSET", usd.Type)
	require.True(t, usd.System)
	require.EqualValues(t, 250, usd.PendingMinor)
	rec = b.api.Get(cash + "?currency=CNY")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, "CNY", decodeLedgerJSON[api.AccountBody](t, rec).Currency)
	b.requireProblem(t, b.api.Get(cash+"?currency=EUR"), "not_found", http.StatusNotFound)

	rec = b.api.Get(cash + "/postings?currency=USD")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	ps := decodeLedgerJSON[ledgerPostingsPage](t, rec).Postings
	require.Len(t, ps, 1)
	require.EqualValues(t, 250, ps[0].AmountMinor)
	rec = b.api.Get(cash + "/postings?currency=CNY")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Empty(t, decodeLedgerJSON[ledgerPostingsPage](t, rec).Postings)

	// Entries: the currency settles the code; nothing is written until it
	// does.
	body := ledgerEntryBody("e-"+b.suffix, false, ledger.AccountPlatformCash, 40, b.code("cny"), -40)
	before := b.writes(t)
	p := b.requireProblem(t, b.api.Post("/v1/journal-entries", body), "currency_required", http.StatusConflict)
	require.Equal(t, []any{"CNY", "USD"}, p.Details["currencies"])
	require.Equal(t, ledger.AccountPlatformCash, p.Details["account"])
	require.Equal(t, before, b.writes(t))

	body["currency"] = "USD"
	b.requireProblem(t, b.api.Post("/v1/journal-entries", body), "unprocessable", http.StatusUnprocessableEntity)
	require.Equal(t, before, b.writes(t))

	body["currency"] = "CNY"
	rec = b.api.Post("/v1/journal-entries", body)
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	require.Equal(t, "CNY", decodeLedgerJSON[api.EntryBody](t, rec).Currency)

	// A retry without the currency finds its key taken by this very
	// payload: it gets the entry back, not currency_required.
	delete(body, "currency")
	rec = b.api.Post("/v1/journal-entries", body)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, "CNY", decodeLedgerJSON[api.EntryBody](t, rec).Currency)
}
