package api_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"riverbank/api"
	"riverbank/internal/db"
	"riverbank/internal/ledger"
)

const jsonHeader = "Content-Type: application/json"

type ledgerAccountsPage struct {
	Accounts   []api.AccountBody `json:"accounts"`
	NextCursor string            `json:"next_cursor"`
}

type ledgerPostingsPage struct {
	Postings   []api.PostingBody `json:"postings"`
	NextCursor string            `json:"next_cursor"`
}

func ledgerEntryBody(key string, urgent bool, postings ...any) map[string]any {
	ps := []map[string]any{}
	for i := 0; i+1 < len(postings); i += 2 {
		ps = append(ps, map[string]any{"account": postings[i], "amount_minor": postings[i+1]})
	}
	return map[string]any{"idempotency_key": key, "description": "test " + key, "urgent": urgent, "postings": ps}
}

// TestLedgerAPICreateEntryBadInput sends every kind of bad journal entry of
// §5 and checks the problem it gets back and that nothing was written: no
// entry, posting, account or job.
func TestLedgerAPICreateEntryBadInput(t *testing.T) {
	t.Parallel()

	raw := func(s string) func(b *ledgerAPIBundle) any {
		return func(*ledgerAPIBundle) any { return strings.NewReader(s) }
	}
	manyPostings := func(b *ledgerAPIBundle, n int) any {
		ps := make([]any, 0, 2*n)
		for i := range n {
			amount := int64(1)
			if i%2 == 1 {
				amount = -1
			}
			ps = append(ps, b.code("a"), amount)
		}
		return ledgerEntryBody("k-"+b.suffix, false, ps...)
	}
	const unprocessable = http.StatusUnprocessableEntity

	tests := []struct {
		name     string
		body     func(b *ledgerAPIBundle) any
		code     string
		statuses []int
	}{
		{"malformed json", raw(`{"idempotency_key": "k", "postings": [`), "validation_failed", []int{400, 422}},
		{"body not an object", raw(`[1, 2]`), "validation_failed", []int{400, 422}},
		{"empty body", raw(``), "validation_failed", []int{400, 422}},
		{"amount is a string", func(b *ledgerAPIBundle) any {
			return ledgerEntryBody("k-"+b.suffix, false, b.code("a"), "10", b.code("b"), "-10")
		}, "validation_failed", []int{400, 422}},
		{"amount is fractional", func(b *ledgerAPIBundle) any {
			return ledgerEntryBody("k-"+b.suffix, false, b.code("a"), 1.5, b.code("b"), -1.5)
		}, "validation_failed", []int{400, 422}},
		{"amount overflows int64", raw(`{"idempotency_key": "k", "postings": [{"account": "platform:cash", "amount_minor": 100000000000000000000}, {"account": "income:interest", "amount_minor": -100000000000000000000}]}`), "validation_failed", []int{400, 422}},
		{"missing idempotency key", func(b *ledgerAPIBundle) any {
			body := ledgerEntryBody("", false, b.code("a"), 10, b.code("b"), -10)
			delete(body, "idempotency_key")
			return body
		}, "validation_failed", []int{unprocessable}},
		{"empty idempotency key", func(b *ledgerAPIBundle) any {
			return ledgerEntryBody("", false, b.code("a"), 10, b.code("b"), -10)
		}, "validation_failed", []int{unprocessable}},
		{"idempotency key too long", func(b *ledgerAPIBundle) any {
			return ledgerEntryBody(strings.Repeat("k", ledger.MaxKeyLen+1), false, b.code("a"), 10, b.code("b"), -10)
		}, "validation_failed", []int{unprocessable}},
		{"description too long", func(b *ledgerAPIBundle) any {
			body := ledgerEntryBody("k-"+b.suffix, false, b.code("a"), 10, b.code("b"), -10)
			body["description"] = strings.Repeat("d", ledger.MaxDescriptionLen+1)
			return body
		}, "validation_failed", []int{unprocessable}},
		{"postings missing", func(b *ledgerAPIBundle) any {
			return map[string]any{"idempotency_key": "k-" + b.suffix}
		}, "validation_failed", []int{unprocessable}},
		{"no postings", func(b *ledgerAPIBundle) any {
			return ledgerEntryBody("k-"+b.suffix, false)
		}, "validation_failed", []int{unprocessable}},
		{"one posting", func(b *ledgerAPIBundle) any {
			return ledgerEntryBody("k-"+b.suffix, false, b.code("a"), 10)
		}, "validation_failed", []int{unprocessable}},
		{"more than 100 postings", func(b *ledgerAPIBundle) any {
			return manyPostings(b, ledger.MaxPostings+2)
		}, "validation_failed", []int{unprocessable}},
		{"posting without amount", func(b *ledgerAPIBundle) any {
			return map[string]any{"idempotency_key": "k-" + b.suffix, "postings": []any{
				map[string]any{"account": b.code("a"), "amount": 10}, map[string]any{"account": b.code("b"), "amount": -10},
			}}
		}, "validation_failed", []int{unprocessable}},
		{"zero amount", func(b *ledgerAPIBundle) any {
			return ledgerEntryBody("k-"+b.suffix, false, b.code("a"), 0, b.code("b"), 0)
		}, "validation_failed", []int{unprocessable}},
		{"bad account code", func(b *ledgerAPIBundle) any {
			return ledgerEntryBody("k-"+b.suffix, false, "Platform Cash", 10, b.code("b"), -10)
		}, "validation_failed", []int{unprocessable}},
		{"unbalanced", func(b *ledgerAPIBundle) any {
			return ledgerEntryBody("k-"+b.suffix, true, b.code("a"), 10, b.code("b"), -9)
		}, "validation_failed", []int{unprocessable}},
		{"amount out of range", func(b *ledgerAPIBundle) any {
			return ledgerEntryBody("k-"+b.suffix, false, b.code("a"), int64(1)<<60, b.code("b"), -(int64(1) << 60))
		}, "validation_failed", []int{unprocessable}},
		{"unknown account", func(b *ledgerAPIBundle) any {
			return ledgerEntryBody("k-"+b.suffix, true, b.code("a"), 10, b.code("missing"), -10)
		}, "unprocessable", []int{unprocessable}},
		{"merchant payable is not created by the api", func(b *ledgerAPIBundle) any {
			return ledgerEntryBody("k-"+b.suffix, true, b.code("a"), 10, ledger.MerchantPayable("m-"+b.suffix), -10)
		}, "unprocessable", []int{unprocessable}},
		{"mixed currency", func(b *ledgerAPIBundle) any {
			return ledgerEntryBody("k-"+b.suffix, true, b.code("a"), 10, b.code("usd"), -10)
		}, "unprocessable", []int{unprocessable}},
		{"same key different amounts", func(b *ledgerAPIBundle) any {
			return ledgerEntryBody("used-"+b.suffix, true, b.code("a"), 11, b.code("b"), -11)
		}, "idempotency_conflict", []int{http.StatusConflict}},
		{"same key different accounts", func(b *ledgerAPIBundle) any {
			return ledgerEntryBody("used-"+b.suffix, true, b.code("b"), 10, b.code("a"), -10)
		}, "idempotency_conflict", []int{http.StatusConflict}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupLedgerAPI(t)
			b.createAccount(t, b.code("a"), "ASSET", "CNY")
			b.createAccount(t, b.code("b"), "LIABILITY", "CNY")
			b.createAccount(t, b.code("usd"), "ASSET", "USD")
			rec := b.api.Post("/v1/journal-entries", ledgerEntryBody("used-"+b.suffix, true, b.code("a"), 10, b.code("b"), -10))
			require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())

			before := b.writes(t)
			rec = b.api.Post("/v1/journal-entries", jsonHeader, tt.body(b))
			b.requireProblem(t, rec, tt.code, tt.statuses...)
			require.Equal(t, before, b.writes(t), "a rejected request must write nothing")
		})
	}
}

func TestLedgerAPICreateEntryReplay(t *testing.T) {
	t.Parallel()
	b := setupLedgerAPI(t)
	b.createAccount(t, b.code("a"), "ASSET", "CNY")
	b.createAccount(t, b.code("b"), "LIABILITY", "CNY")
	body := ledgerEntryBody("replay-"+b.suffix, true, b.code("a"), 250, b.code("b"), -250)

	before := b.writes(t)
	rec := b.api.Post("/v1/journal-entries", body)
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	first := decodeLedgerJSON[api.EntryBody](t, rec)
	require.Positive(t, first.ID)
	require.Equal(t, "PENDING", first.Status)
	require.Equal(t, "CNY", first.Currency)
	require.True(t, first.Urgent)
	require.Len(t, first.Postings, 2)
	require.Equal(t, api.PostingBody{ID: first.Postings[0].ID, EntryID: first.ID, Account: b.code("a"), AmountMinor: 250, Status: "PENDING", CreatedAt: first.Postings[0].CreatedAt}, first.Postings[0])
	require.Equal(t, ledgerWrites{Accounts: before.Accounts, Entries: before.Entries + 1, Postings: before.Postings + 2, Jobs: before.Jobs + 2}, b.writes(t))

	afterFirst := b.writes(t)
	rec = b.api.Post("/v1/journal-entries", body)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	again := decodeLedgerJSON[api.EntryBody](t, rec)
	require.Equal(t, first.ID, again.ID)
	require.Equal(t, []int64{first.Postings[0].ID, first.Postings[1].ID}, []int64{again.Postings[0].ID, again.Postings[1].ID})
	require.Equal(t, afterFirst, b.writes(t), "a replay writes nothing")

	rec = b.api.Get(fmt.Sprintf("/v1/journal-entries/%d", first.ID))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	got := decodeLedgerJSON[api.EntryBody](t, rec)
	require.Equal(t, first.ID, got.ID)
	require.Equal(t, "replay-"+b.suffix, got.IdempotencyKey)
	require.Equal(t, "test replay-"+b.suffix, got.Description)
	require.Len(t, got.Postings, 2)
	require.Equal(t, b.code("b"), got.Postings[1].Account)
	require.EqualValues(t, -250, got.Postings[1].AmountMinor)

	rec = b.api.Get("/v1/accounts/" + b.code("a"))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	acc := decodeLedgerJSON[api.AccountBody](t, rec)
	require.Zero(t, acc.BalanceMinor)
	require.EqualValues(t, 250, acc.PendingMinor)
	require.EqualValues(t, 1, acc.PendingPostings)
}

func TestLedgerAPIGetEntryErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		path   string
		status int
		code   string
	}{
		{"unknown id", "/v1/journal-entries/999999999999", http.StatusNotFound, "not_found"},
		{"id not a number", "/v1/journal-entries/abc", http.StatusUnprocessableEntity, "validation_failed"},
		{"id zero", "/v1/journal-entries/0", http.StatusUnprocessableEntity, "validation_failed"},
		{"id negative", "/v1/journal-entries/-1", http.StatusUnprocessableEntity, "validation_failed"},
		{"unknown account", "/v1/accounts/no:such:account", http.StatusNotFound, "not_found"},
		{"unknown account postings", "/v1/accounts/no:such:account/postings", http.StatusNotFound, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupLedgerAPI(t)
			b.requireProblem(t, b.api.Get(tt.path), tt.code, tt.status)
		})
	}
}

func TestLedgerAPICreateAccount(t *testing.T) {
	t.Parallel()

	account := func(code, name, typ, currency string) map[string]any {
		return map[string]any{"code": code, "name": name, "type": typ, "currency": currency}
	}

	t.Run("create, replay and read", func(t *testing.T) {
		t.Parallel()
		b := setupLedgerAPI(t)
		body := account(b.code("expense:fees"), "Fees", "EXPENSE", "CNY")
		rec := b.api.Post("/v1/accounts", body)
		require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
		created := decodeLedgerJSON[api.AccountBody](t, rec)
		require.Equal(t, b.code("expense:fees"), created.Code)
		require.Equal(t, "EXPENSE", created.Type)
		require.False(t, created.System)

		before := b.writes(t)
		rec = b.api.Post("/v1/accounts", body)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		require.Equal(t, created, decodeLedgerJSON[api.AccountBody](t, rec))
		require.Equal(t, before, b.writes(t))

		rec = b.api.Get("/v1/accounts/" + b.code("expense:fees"))
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		require.Equal(t, created, decodeLedgerJSON[api.AccountBody](t, rec))

		rec = b.api.Get("/v1/accounts/" + ledger.AccountPlatformCash)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		cash := decodeLedgerJSON[api.AccountBody](t, rec)
		require.True(t, cash.System)
		require.Equal(t, "ASSET", cash.Type)
	})

	tests := []struct {
		name   string
		body   func(b *ledgerAPIBundle) map[string]any
		status int
		code   string
	}{
		{"same code different name", func(b *ledgerAPIBundle) map[string]any {
			return account(b.code("acc"), "Other", "ASSET", "CNY")
		}, http.StatusConflict, "idempotency_conflict"},
		{"same code different type", func(b *ledgerAPIBundle) map[string]any {
			return account(b.code("acc"), "Existing", "LIABILITY", "CNY")
		}, http.StatusConflict, "idempotency_conflict"},
		{"same code different currency", func(b *ledgerAPIBundle) map[string]any {
			return account(b.code("acc"), "Existing", "ASSET", "USD")
		}, http.StatusConflict, "idempotency_conflict"},
		{"system account code", func(b *ledgerAPIBundle) map[string]any {
			return account(ledger.AccountPlatformCash, "Mine now", "ASSET", "CNY")
		}, http.StatusUnprocessableEntity, "reserved_code"},
		{"system account code in another currency", func(b *ledgerAPIBundle) map[string]any {
			return account(ledger.AccountPlatformCash, "Mine now", "ASSET", "USD")
		}, http.StatusUnprocessableEntity, "reserved_code"},
		{"merchant payable squatting", func(b *ledgerAPIBundle) map[string]any {
			return account("merchant:"+b.suffix+":payable", "Squat", "LIABILITY", "USD")
		}, http.StatusUnprocessableEntity, "reserved_code"},
		{"system prefix", func(b *ledgerAPIBundle) map[string]any {
			return account("loans:whatever", "Mine", "ASSET", "CNY")
		}, http.StatusUnprocessableEntity, "reserved_code"},
		{"uppercase code", func(b *ledgerAPIBundle) map[string]any {
			return account("Bad:"+b.suffix, "Bad", "ASSET", "CNY")
		}, http.StatusUnprocessableEntity, "validation_failed"},
		{"code too long", func(b *ledgerAPIBundle) map[string]any {
			return account(strings.Repeat("a", 129), "Long", "ASSET", "CNY")
		}, http.StatusUnprocessableEntity, "validation_failed"},
		{"empty name", func(b *ledgerAPIBundle) map[string]any {
			return account(b.code("new"), "", "ASSET", "CNY")
		}, http.StatusUnprocessableEntity, "validation_failed"},
		{"unknown type", func(b *ledgerAPIBundle) map[string]any {
			return account(b.code("new"), "New", "CASH", "CNY")
		}, http.StatusUnprocessableEntity, "validation_failed"},
		{"lowercase currency", func(b *ledgerAPIBundle) map[string]any {
			return account(b.code("new"), "New", "ASSET", "cny")
		}, http.StatusUnprocessableEntity, "validation_failed"},
		{"missing currency", func(b *ledgerAPIBundle) map[string]any {
			body := account(b.code("new"), "New", "ASSET", "CNY")
			delete(body, "currency")
			return body
		}, http.StatusUnprocessableEntity, "validation_failed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupLedgerAPI(t)
			rec := b.api.Post("/v1/accounts", account(b.code("acc"), "Existing", "ASSET", "CNY"))
			require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
			before := b.writes(t)
			b.requireProblem(t, b.api.Post("/v1/accounts", tt.body(b)), tt.code, tt.status)
			require.Equal(t, before, b.writes(t))
		})
	}
}

func TestLedgerAPIListAccountsPagination(t *testing.T) {
	t.Parallel()
	b := setupLedgerAPI(t)
	for i := range 12 {
		b.createAccount(t, fmt.Sprintf("page:%02d:%s", i, b.suffix), "ASSET", "CNY")
	}
	rows, err := b.tx.Query(b.ctx, "SELECT code FROM ledger_account ORDER BY code")
	require.NoError(t, err)
	want, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Greater(t, len(want), 5*3, "enough accounts for several pages")

	var got []string
	cursor, pages := "", 0
	for {
		path := "/v1/accounts?limit=5"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		rec := b.api.Get(path)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		page := decodeLedgerJSON[ledgerAccountsPage](t, rec)
		pages++
		require.LessOrEqual(t, len(page.Accounts), 5)
		for _, a := range page.Accounts {
			got = append(got, a.Code)
		}
		if page.NextCursor == "" {
			require.Less(t, len(page.Accounts), 5, "a full page must carry next_cursor")
			break
		}
		require.Len(t, page.Accounts, 5)
		cursor = page.NextCursor
		require.Less(t, pages, 100, "pagination does not end")
	}
	require.Equal(t, want, got, "every account once, in code order")
	require.Equal(t, len(want)/5+1, pages)

	// The default page holds them all here.
	rec := b.api.Get("/v1/accounts")
	require.Equal(t, http.StatusOK, rec.Code)
	require.Len(t, decodeLedgerJSON[ledgerAccountsPage](t, rec).Accounts, min(len(want), api.DefaultLimit))
}

func TestLedgerAPIAccountPostingsPagination(t *testing.T) {
	t.Parallel()
	b := setupLedgerAPI(t)
	b.createAccount(t, b.code("a"), "ASSET", "CNY")
	b.createAccount(t, b.code("b"), "LIABILITY", "CNY")
	var entryIDs []int64
	for i := range 5 {
		rec := b.api.Post("/v1/journal-entries", ledgerEntryBody(fmt.Sprintf("p-%d-%s", i, b.suffix), false, b.code("a"), 10+i, b.code("b"), -(10+i)))
		require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
		entryIDs = append(entryIDs, decodeLedgerJSON[api.EntryBody](t, rec).ID)
	}
	// Apply one account's first batch so the list shows both states.
	err := b.store.InTx(b.ctx, func(tx *db.Tx) error {
		acc, err := b.ledger.GetAccount(b.ctx, b.code("a"), "")
		if err != nil {
			return err
		}
		_, err = ledger.ApplyBatchTx(b.ctx, tx, acc.ID, 2)
		return err
	})
	require.NoError(t, err)

	var got []api.PostingBody
	cursor, pages := "", 0
	for {
		path := "/v1/accounts/" + b.code("a") + "/postings?limit=2"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		rec := b.api.Get(path)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		page := decodeLedgerJSON[ledgerPostingsPage](t, rec)
		pages++
		got = append(got, page.Postings...)
		if page.NextCursor == "" {
			break
		}
		require.Len(t, page.Postings, 2)
		cursor = page.NextCursor
		require.Less(t, pages, 10, "pagination does not end")
	}
	require.Equal(t, 3, pages)
	require.Len(t, got, 5)
	for i, p := range got {
		// Newest first.
		require.Equal(t, entryIDs[4-i], p.EntryID)
		require.EqualValues(t, 10+4-i, p.AmountMinor)
		require.Equal(t, b.code("a"), p.Account)
		require.Equal(t, fmt.Sprintf("test p-%d-%s", 4-i, b.suffix), p.Description)
		if i > 0 {
			require.Less(t, p.ID, got[i-1].ID)
		}
		// The two oldest were applied.
		if i >= 3 {
			require.Equal(t, "APPLIED", p.Status)
			require.NotNil(t, p.AppliedAt)
		} else {
			require.Equal(t, "PENDING", p.Status)
			require.Nil(t, p.AppliedAt)
		}
	}
}

func TestLedgerAPIBadListParams(t *testing.T) {
	t.Parallel()
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name string
		path func(b *ledgerAPIBundle) string
	}{
		{"accounts cursor not base64", func(*ledgerAPIBundle) string { return "/v1/accounts?cursor=%21%21%21" }},
		{"accounts cursor without version", func(*ledgerAPIBundle) string { return "/v1/accounts?cursor=" + enc("platform:cash") }},
		{"accounts cursor too long", func(*ledgerAPIBundle) string { return "/v1/accounts?cursor=" + strings.Repeat("a", 201) }},
		{"accounts limit zero", func(*ledgerAPIBundle) string { return "/v1/accounts?limit=0" }},
		{"accounts limit above max", func(*ledgerAPIBundle) string { return "/v1/accounts?limit=501" }},
		{"accounts limit not a number", func(*ledgerAPIBundle) string { return "/v1/accounts?limit=ten" }},
		{"postings cursor not base64", func(b *ledgerAPIBundle) string { return "/v1/accounts/" + b.code("a") + "/postings?cursor=garbage!" }},
		{"postings cursor not an id", func(b *ledgerAPIBundle) string {
			return "/v1/accounts/" + b.code("a") + "/postings?cursor=" + enc("v1:abc")
		}},
		{"postings cursor negative id", func(b *ledgerAPIBundle) string {
			return "/v1/accounts/" + b.code("a") + "/postings?cursor=" + enc("v1:-5")
		}},
		{"postings limit above max", func(b *ledgerAPIBundle) string { return "/v1/accounts/" + b.code("a") + "/postings?limit=1000" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupLedgerAPI(t)
			b.createAccount(t, b.code("a"), "ASSET", "CNY")
			b.requireProblem(t, b.api.Get(tt.path(b)), "validation_failed", http.StatusUnprocessableEntity)
		})
	}
}

func TestLedgerAPITrialBalance(t *testing.T) {
	t.Parallel()
	b := setupLedgerAPI(t)
	a := b.createAccount(t, b.code("a"), "ASSET", "GBP")
	b.createAccount(t, b.code("b"), "LIABILITY", "GBP")
	rec := b.api.Post("/v1/journal-entries", ledgerEntryBody("tb-"+b.suffix, false, b.code("a"), 500, b.code("b"), -500))
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())

	trial := func() api.TrialBalanceBody {
		t.Helper()
		rec := b.api.Get("/v1/ledger/trial-balance")
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		return decodeLedgerJSON[api.TrialBalanceBody](t, rec)
	}
	gbp := func(tb api.TrialBalanceBody) api.CurrencyTotalsBody {
		t.Helper()
		i := slices.IndexFunc(tb.Currencies, func(c api.CurrencyTotalsBody) bool { return c.Currency == "GBP" })
		require.GreaterOrEqual(t, i, 0, "no GBP line: %+v", tb)
		return tb.Currencies[i]
	}

	tb := trial()
	require.True(t, tb.Balanced)
	require.Empty(t, tb.AccountMismatches)
	require.Equal(t, api.CurrencyTotalsBody{Currency: "GBP", Accounts: 2, Balanced: true}, gbp(tb))

	// A balance changed behind the ledger's back is reported.
	_, err := b.tx.Exec(b.ctx, "UPDATE ledger_account SET balance_minor = 3 WHERE id = $1", a.ID)
	require.NoError(t, err)
	tb = trial()
	require.False(t, tb.Balanced)
	require.Equal(t, []api.MismatchBody{{Code: b.code("a"), Currency: "GBP", BalanceMinor: 3, AppliedSumMinor: 0}}, tb.AccountMismatches)
	require.Equal(t, api.CurrencyTotalsBody{Currency: "GBP", BalanceTotalMinor: 3, Accounts: 2, Balanced: false}, gbp(tb))
}
