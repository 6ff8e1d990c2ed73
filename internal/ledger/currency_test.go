package ledger_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/ledger"
	"riverbank/internal/testkit"
)

// postInternal writes an entry the way internal writers do: ledger.PostTx
// in a transaction of the store, which may create system accounts.
func (b *testBundle) postInternal(t testing.TB, in ledger.EntryInput) (*ledger.Entry, bool, error) {
	t.Helper()
	var (
		e       *ledger.Entry
		created bool
	)
	err := b.store.InTx(b.ctx, func(tx *db.Tx) error {
		var err error
		e, created, err = ledger.PostTx(b.ctx, tx, in)
		return err
	})
	return e, created, err
}

// ledgerRows counts every row an entry can write: entries, postings,
// accounts and jobs.
func (b *testBundle) ledgerRows(t testing.TB) [4]int64 {
	t.Helper()
	var n [4]int64
	require.NoError(t, b.dbtx.QueryRow(b.ctx, `SELECT (SELECT count(*) FROM ledger_entry), (SELECT count(*) FROM ledger_posting),
		(SELECT count(*) FROM ledger_account), (SELECT count(*) FROM river_job)`).Scan(&n[0], &n[1], &n[2], &n[3]))
	return n
}

// applyAll applies every pending posting of the accounts, batch by batch,
// as ledger.apply does.
func (b *testBundle) applyAll(t testing.TB, accountIDs ...int64) {
	t.Helper()
	for _, id := range accountIDs {
		for {
			res, err := db.InTxV(b.ctx, b.store, func(tx *db.Tx) (ledger.ApplyResult, error) {
				return ledger.ApplyBatchTx(b.ctx, tx, id, ledger.ApplyBatchSize)
			})
			require.NoError(t, err)
			if res.Applied == 0 {
				break
			}
		}
	}
}

func (b *testBundle) account(t testing.TB, code, currency string) *ledger.Account {
	t.Helper()
	a, err := b.svc.GetAccount(b.ctx, code, currency)
	require.NoError(t, err)
	return a
}

// TestSystemAccountsCreatedPerCurrency: an internal entry in USD creates the
// USD system accounts it names on first use, with their type and the system
// flag, and leaves the CNY ones of the migration alone; a read of the code
// then needs the currency.
func TestSystemAccountsCreatedPerCurrency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cashCNY := b.account(t, ledger.AccountPlatformCash, "")
	incomeCNY := b.account(t, ledger.AccountIncomeInterest, "")
	require.Equal(t, "CNY", cashCNY.Currency)

	in := ledger.EntryInput{
		IdempotencyKey:       ledger.SystemKeyPrefix + "interest:" + b.suffix,
		Description:          "interest received",
		Currency:             "USD",
		CreateSystemAccounts: true,
		Postings: []ledger.PostingInput{
			{Account: ledger.AccountPlatformCash, AmountMinor: 100},
			{Account: ledger.AccountIncomeInterest, AmountMinor: -100},
		},
	}
	e, created, err := b.postInternal(t, in)
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, "USD", e.Currency)

	cashUSD := b.account(t, ledger.AccountPlatformCash, "USD")
	require.Equal(t, "USD", cashUSD.Currency)
	require.Equal(t, "ASSET", cashUSD.Type)
	require.True(t, cashUSD.System)
	require.EqualValues(t, 100, cashUSD.PendingMinor)
	require.EqualValues(t, 1, cashUSD.PendingCount)
	incomeUSD := b.account(t, ledger.AccountIncomeInterest, "USD")
	require.Equal(t, "INCOME", incomeUSD.Type)
	require.True(t, incomeUSD.System)
	require.EqualValues(t, -100, incomeUSD.PendingMinor)
	require.NotEqual(t, cashCNY.ID, cashUSD.ID)

	// The CNY accounts are untouched.
	require.Equal(t, cashCNY, b.account(t, ledger.AccountPlatformCash, "CNY"))
	require.Equal(t, incomeCNY, b.account(t, ledger.AccountIncomeInterest, "CNY"))
	require.EqualValues(t, 2, b.count(t, "SELECT count(*) FROM ledger_account WHERE code = $1", ledger.AccountPlatformCash))
	require.EqualValues(t, 0, b.count(t, "SELECT count(*) FROM ledger_account WHERE currency = 'USD' AND code <> ALL($1)",
		[]string{ledger.AccountPlatformCash, ledger.AccountIncomeInterest}), "only the accounts the entry names are created")

	_, err = b.svc.GetAccount(b.ctx, ledger.AccountPlatformCash, "")
	de := testkit.RequireCode(t, err, riverbank.ECURRENCYREQUIRED)
	require.Equal(t, []string{"CNY", "USD"}, de.Details["currencies"])

	// A replay creates nothing more.
	rows := b.ledgerRows(t)
	again, created, err := b.postInternal(t, in)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, e.ID, again.ID)
	require.Equal(t, rows, b.ledgerRows(t))
}

// TestMerchantPayableFirstUseInCurrencyConcurrently: writers racing on the
// first USD use of one merchant's payable (and of platform:cash in USD)
// create each account once, and every entry is written.
func TestMerchantPayableFirstUseInCurrencyConcurrently(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	const n = 10
	payable := ledger.MerchantPayable("x")
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			<-start
			_, _, errs[i] = b.postInternal(t, ledger.EntryInput{
				IdempotencyKey:       fmt.Sprintf("%sorder-payment:p%d", ledger.SystemKeyPrefix, i),
				Currency:             "USD",
				Urgent:               i%2 == 0,
				CreateSystemAccounts: true,
				Postings: []ledger.PostingInput{
					{Account: ledger.AccountPlatformCash, AmountMinor: int64(i + 1)},
					{Account: payable, AmountMinor: -int64(i + 1)},
				},
			})
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "writer %d", i)
	}

	require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM ledger_account WHERE code = $1", payable))
	require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM ledger_account WHERE code = $1 AND currency = 'USD'", ledger.AccountPlatformCash))
	require.EqualValues(t, n, b.count(t, "SELECT count(*) FROM ledger_entry WHERE currency = 'USD'"))
	require.EqualValues(t, 2*n, b.count(t, "SELECT count(*) FROM ledger_posting"))

	acc := b.account(t, payable, "")
	require.Equal(t, "USD", acc.Currency)
	require.Equal(t, "LIABILITY", acc.Type)
	require.False(t, acc.System)
	require.EqualValues(t, -n*(n+1)/2, acc.PendingMinor)
	cash := b.account(t, ledger.AccountPlatformCash, "USD")
	require.True(t, cash.System)
	require.EqualValues(t, n*(n+1)/2, cash.PendingMinor)
}

// TestPostCurrencyOfAmbiguousCodes: an entry from the API (Post, no account
// creation) that names a code existing in two currencies must name its
// currency; an account that exists only in another currency than the
// entry's is unprocessable; a refused entry writes nothing.
func TestPostCurrencyOfAmbiguousCodes(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name     string
		currency string // of the entry; "" = omitted
		debit    string // "cash" (platform:cash), "cny" or "other" (own accounts)
		credit   string
		code     string // "" = accepted
	}{
		{"a code in two currencies needs the entry's currency", "", "cash", "cny", riverbank.ECURRENCYREQUIRED},
		{"naming the currency settles the code", "CNY", "cash", "cny", ""},
		{"the code's other currency works too", "other", "cash", "other", ""},
		{"an account only in another currency is unprocessable", "other", "cash", "cny", riverbank.EUNPROCESSABLE},
		{"an account only in another currency is unprocessable without a currency", "", "cny", "other", riverbank.EUNPROCESSABLE},
		{"a currency none of the accounts exists in is unprocessable", "EUR", "cash", "cny", riverbank.EUNPROCESSABLE},
	}
	// Each case gives platform:cash its own second currency: an uncommitted
	// account in one test's transaction would make another test creating
	// the same (code, currency) wait for its rollback.
	others := []string{"JPY", "CHF", "AUD", "CAD", "SEK", "NOK"}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			other := others[i]
			codes := map[string]string{"cash": ledger.AccountPlatformCash, "cny": b.code("cny"), "other": b.code("other")}
			b.createAccount(t, codes["cny"], "LIABILITY", "CNY")
			b.createAccount(t, codes["other"], "LIABILITY", other)
			_, _, err := b.postInternal(t, ledger.EntryInput{
				IdempotencyKey: ledger.SystemKeyPrefix + b.code("seed"), Currency: other, CreateSystemAccounts: true,
				Postings: []ledger.PostingInput{{Account: ledger.AccountPlatformCash, AmountMinor: 5}, {Account: codes["other"], AmountMinor: -5}},
			})
			require.NoError(t, err)

			currency := tt.currency
			if currency == "other" {
				currency = other
			}
			in := transfer(b.code("k"), codes[tt.debit], codes[tt.credit], 7)
			in.Currency = currency
			before := b.ledgerRows(t)
			e, created, err := b.svc.Post(b.ctx, in)
			if tt.code == "" {
				require.NoError(t, err)
				require.True(t, created)
				require.Equal(t, currency, e.Currency)
				require.Equal(t, before[1]+2, b.ledgerRows(t)[1])
				return
			}
			de := testkit.RequireCode(t, err, tt.code)
			require.Equal(t, before, b.ledgerRows(t), "a refused entry writes nothing")
			if tt.code == riverbank.ECURRENCYREQUIRED {
				want := []string{"CNY", other}
				slices.Sort(want)
				require.Equal(t, want, de.Details["currencies"])
				require.Equal(t, ledger.AccountPlatformCash, de.Details["account"])
			}
		})
	}
}

// TestPostReplayAfterCodeGainedCurrency: a client's retry of an entry
// written without a currency gets the original entry back, even when one
// of its codes has since been created in another currency (an order paid
// in USD creates platform:cash in USD).
func TestPostReplayAfterCodeGainedCurrency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.createAccount(t, b.code("cny"), "LIABILITY", "CNY")
	in := transfer(b.code("k"), ledger.AccountPlatformCash, b.code("cny"), 9)
	first, created, err := b.svc.Post(b.ctx, in)
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, "CNY", first.Currency)

	b.createAccount(t, b.code("nzd"), "LIABILITY", "NZD")
	_, _, err = b.postInternal(t, ledger.EntryInput{
		IdempotencyKey: ledger.SystemKeyPrefix + b.code("seed"), Currency: "NZD", CreateSystemAccounts: true,
		Postings: []ledger.PostingInput{{Account: ledger.AccountPlatformCash, AmountMinor: 5}, {Account: b.code("nzd"), AmountMinor: -5}},
	})
	require.NoError(t, err)

	before := b.ledgerRows(t)
	again, created, err := b.svc.Post(b.ctx, in)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, first.ID, again.ID)
	require.Equal(t, before, b.ledgerRows(t))

	// A different payload under the key is still a conflict.
	other := transfer(b.code("k"), ledger.AccountPlatformCash, b.code("cny"), 10)
	_, _, err = b.svc.Post(b.ctx, other)
	testkit.RequireCode(t, err, riverbank.EIDEMPOTENCYCONFLICT)
	// So is naming another currency than the original's.
	in.Currency = "NZD"
	_, _, err = b.svc.Post(b.ctx, in)
	require.Error(t, err)
	require.Equal(t, before, b.ledgerRows(t))
}

// TestBalanceOutOfRange: no entry can take a balance past ±MaxBalanceMinor
// (the hostile-input finding: ledger.apply adding up an account's postings
// must never overflow bigint). Large entries count the account's pending
// postings too; once applied, sums are read in numeric.
func TestBalanceOutOfRange(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := b.createAccount(t, b.code("big:a"), "ASSET", "CNY")
	l := b.createAccount(t, b.code("big:b"), "LIABILITY", "CNY")
	c := b.createAccount(t, b.code("big:c"), "LIABILITY", "CNY")

	// The largest entry: 50 debits of the largest amount on A, 50 credits
	// on B; 20 of them put exactly MaxBalanceMinor on each, pending.
	const perEntry = ledger.MaxPostings / 2 * ledger.MaxAmountMinor
	const full = ledger.MaxBalanceMinor / perEntry
	require.EqualValues(t, 20, full)
	big := func(i int) ledger.EntryInput {
		in := ledger.EntryInput{IdempotencyKey: b.code(fmt.Sprintf("big-%02d", i)), Description: "big"}
		for range ledger.MaxPostings / 2 {
			in.Postings = append(in.Postings, ledger.PostingInput{Account: a.Code, AmountMinor: ledger.MaxAmountMinor})
		}
		for range ledger.MaxPostings / 2 {
			in.Postings = append(in.Postings, ledger.PostingInput{Account: l.Code, AmountMinor: -ledger.MaxAmountMinor})
		}
		return in
	}
	for i := range full {
		_, created, err := b.svc.Post(b.ctx, big(i))
		require.NoError(t, err, "entry %d", i)
		require.True(t, created)
	}
	got := b.account(t, a.Code, "")
	require.Zero(t, got.BalanceMinor)
	require.EqualValues(t, ledger.MaxBalanceMinor, got.PendingMinor)
	require.EqualValues(t, full*ledger.MaxPostings/2, got.PendingCount)

	before := b.ledgerRows(t)
	_, _, err := b.svc.Post(b.ctx, big(full))
	de := testkit.RequireCode(t, err, riverbank.EBALANCEOUTOFRANGE)
	require.ElementsMatch(t, []string{a.Code, l.Code}, de.Details["accounts"])
	require.EqualValues(t, ledger.MaxBalanceMinor, de.Details["max_balance_minor"])
	require.Equal(t, before, b.ledgerRows(t), "a refused entry writes nothing")

	// A retry of an entry already written is answered with that entry, not
	// refused because its own pending postings now count against it.
	last, created, err := b.svc.Post(b.ctx, big(full-1))
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, big(full-1).IdempotencyKey, last.IdempotencyKey)
	require.Equal(t, before, b.ledgerRows(t))

	// Applied, the balances are exactly at the bound; half-applied, the
	// trial balance's totals are far from zero and still exact.
	b.applyAll(t, a.ID)
	tb, err := b.svc.TrialBalance(b.ctx)
	require.NoError(t, err)
	cny := currencyLine(t, tb, "CNY")
	require.EqualValues(t, ledger.MaxBalanceMinor, cny.BalanceTotalMinor)
	require.EqualValues(t, -ledger.MaxBalanceMinor, cny.PendingTotalMinor)
	require.False(t, cny.Balanced)
	require.Empty(t, tb.Mismatches)

	b.applyAll(t, l.ID)
	got = b.account(t, a.Code, "")
	require.EqualValues(t, ledger.MaxBalanceMinor, got.BalanceMinor)
	require.Zero(t, got.PendingMinor)
	require.EqualValues(t, full*ledger.MaxPostings/2, got.AppliedPostings)
	require.EqualValues(t, -ledger.MaxBalanceMinor, b.account(t, l.Code, "").BalanceMinor)
	require.EqualValues(t, full, b.count(t, "SELECT count(*) FROM ledger_entry_state WHERE status = 'APPLIED' AND description = 'big'"))
	tb, err = b.svc.TrialBalance(b.ctx)
	require.NoError(t, err)
	require.Empty(t, tb.Mismatches)
	require.True(t, tb.Balanced, "%+v", tb)
	require.Equal(t, ledger.CurrencyTotals{Currency: "CNY", Accounts: cny.Accounts, Balanced: true}, currencyLine(t, tb, "CNY"))

	// At the bound, one more unit is refused on the balance alone (a small
	// entry does not scan pending postings), the way back is accepted.
	before = b.ledgerRows(t)
	_, _, err = b.svc.Post(b.ctx, transfer(b.code("up"), a.Code, c.Code, 1))
	de = testkit.RequireCode(t, err, riverbank.EBALANCEOUTOFRANGE)
	require.Equal(t, []string{a.Code}, de.Details["accounts"])
	require.Equal(t, before, b.ledgerRows(t))
	_, created, err = b.svc.Post(b.ctx, transfer(b.code("down"), c.Code, a.Code, 1))
	require.NoError(t, err)
	require.True(t, created)
	// The liability side is at the bound the other way.
	_, _, err = b.svc.Post(b.ctx, transfer(b.code("deeper"), c.Code, l.Code, 1))
	de = testkit.RequireCode(t, err, riverbank.EBALANCEOUTOFRANGE)
	require.Equal(t, []string{l.Code}, de.Details["accounts"])
}

// currencyLine returns the trial balance's line of currency.
func currencyLine(t testing.TB, tb *ledger.TrialBalance, currency string) ledger.CurrencyTotals {
	t.Helper()
	i := slices.IndexFunc(tb.Currencies, func(c ledger.CurrencyTotals) bool { return c.Currency == currency })
	require.GreaterOrEqual(t, i, 0, "no %s line in %+v", currency, tb)
	return tb.Currencies[i]
}

// TestTrialBalancePerCurrency: entries in three currencies give one line
// per currency, each balanced once applied.
func TestTrialBalancePerCurrency(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var ids []int64
	for i, cur := range []string{"CNY", "USD", "EUR"} {
		d := b.createAccount(t, b.code("tb:"+strings.ToLower(cur)+":a"), "ASSET", cur)
		cr := b.createAccount(t, b.code("tb:"+strings.ToLower(cur)+":b"), "INCOME", cur)
		ids = append(ids, d.ID, cr.ID)
		for j := range 3 {
			in := transfer(b.code(fmt.Sprintf("tb-%s-%d", cur, j)), d.Code, cr.Code, int64(100*(i+1)+j))
			in.Currency = cur
			e, _, err := b.svc.Post(b.ctx, in)
			require.NoError(t, err)
			require.Equal(t, cur, e.Currency)
		}
	}
	b.applyAll(t, ids...)

	tb, err := b.svc.TrialBalance(b.ctx)
	require.NoError(t, err)
	require.True(t, tb.Balanced, "%+v", tb)
	require.Empty(t, tb.Mismatches)
	var currencies []string
	for _, c := range tb.Currencies {
		currencies = append(currencies, c.Currency)
		require.True(t, c.Balanced, "%+v", c)
		require.Zero(t, c.BalanceTotalMinor)
		require.Zero(t, c.PendingTotalMinor)
	}
	require.True(t, slices.IsSorted(currencies), "%v", currencies)
	require.Equal(t, len(currencies), len(slices.Compact(slices.Clone(currencies))), "one line per currency: %v", currencies)
	for _, cur := range []string{"CNY", "USD", "EUR"} {
		require.Contains(t, currencies, cur)
	}
	require.EqualValues(t, 2, currencyLine(t, tb, "USD").Accounts)
	require.EqualValues(t, 2, currencyLine(t, tb, "EUR").Accounts)
	require.EqualValues(t, 603, b.account(t, b.code("tb:usd:a"), "").BalanceMinor)
	require.EqualValues(t, -903, b.account(t, b.code("tb:eur:b"), "").BalanceMinor)
}
