package jobs_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/ledger"
	"riverbank/internal/orders"
	"riverbank/internal/testkit"
)

// TestOrderPaymentInEveryCurrency runs the real workers end to end: a USD
// order paid posts to platform:cash and merchant:{id}:payable in USD, both
// created on first use, and the apply jobs bring the balances there; the
// trial balance gets a USD line that balances. An EUR order of the same
// merchant gets its own accounts and its own line.
func TestOrderPaymentInEveryCurrency(t *testing.T) {
	t.Parallel()
	k := testkit.DB(t, testkit.DBOptions{})
	testkit.Start(t, k.Client(t, nil))
	osvc, lsvc := k.Services.Orders, k.Services.Ledger
	const merchant = "shop"
	payable := ledger.MerchantPayable(merchant)

	drained := func() {
		t.Helper()
		testkit.WaitFor(t, 20*time.Second, "the ledger to drain", func() bool {
			return k.Count(t, "SELECT count(*) FROM ledger_posting_state WHERE applied_at IS NULL") == 0 &&
				k.Count(t, "SELECT count(*) FROM river_job WHERE kind LIKE 'ledger.%' AND state NOT IN ('completed', 'cancelled', 'discarded')") == 0
		})
	}
	// pay sells qty units of a new product priced in currency and pays
	// the order; it returns the order total.
	pay := func(sku, currency string, price, qty int64) int64 {
		t.Helper()
		p, _, err := osvc.PutProduct(k.Ctx, orders.ProductInput{SKU: sku, Name: sku, PriceMinor: price, Currency: currency, Stock: 10})
		require.NoError(t, err)
		require.Equal(t, currency, p.Currency)
		o, created, err := osvc.Create(k.Ctx, orders.CreateInput{BuyerID: "buyer-1", MerchantID: merchant, Identifier: "order-" + sku,
			Items: []orders.ItemInput{{SKU: sku, Quantity: qty}}})
		require.NoError(t, err)
		require.True(t, created)
		require.Equal(t, currency, o.Currency)
		require.Equal(t, price*qty, o.TotalMinor)
		o, paid, err := osvc.Pay(k.Ctx, o.ID, orders.PayInput{PaymentID: "pay-" + sku, AmountMinor: o.TotalMinor})
		require.NoError(t, err)
		require.True(t, paid)
		require.Equal(t, orders.StatusPaid, o.Status)
		require.NotNil(t, o.LedgerEntryID)

		drained()
		e, err := lsvc.GetEntry(k.Ctx, *o.LedgerEntryID)
		require.NoError(t, err)
		require.Equal(t, currency, e.Currency)
		require.Equal(t, "APPLIED", e.Status)
		return o.TotalMinor
	}
	account := func(code, currency string) *ledger.Account {
		t.Helper()
		a, err := lsvc.GetAccount(k.Ctx, code, currency)
		require.NoError(t, err)
		require.Equal(t, currency, a.Currency)
		require.Zero(t, a.PendingCount)
		return a
	}
	trialBalance := func() map[string]ledger.CurrencyTotals {
		t.Helper()
		tb, err := lsvc.TrialBalance(k.Ctx)
		require.NoError(t, err)
		require.True(t, tb.Balanced, "%+v", tb)
		require.Empty(t, tb.Mismatches)
		lines := map[string]ledger.CurrencyTotals{}
		for _, c := range tb.Currencies {
			require.NotContains(t, lines, c.Currency, "one line per currency")
			lines[c.Currency] = c
		}
		return lines
	}

	usdTotal := pay("TEA-USD", "USD", 250, 3)
	payableUSD := account(payable, "USD")
	require.Equal(t, "LIABILITY", payableUSD.Type)
	require.False(t, payableUSD.System)
	require.Equal(t, -usdTotal, payableUSD.BalanceMinor)
	cash := account(ledger.AccountPlatformCash, "USD")
	require.True(t, cash.System)
	require.Equal(t, usdTotal, cash.BalanceMinor)
	require.Zero(t, account(ledger.AccountPlatformCash, "CNY").BalanceMinor, "the CNY cash account is untouched")
	lines := trialBalance()
	require.Equal(t, ledger.CurrencyTotals{Currency: "USD", Accounts: 2, Balanced: true}, lines["USD"])
	require.NotContains(t, lines, "EUR")

	eurTotal := pay("TEA-EUR", "EUR", 400, 2)
	require.Equal(t, -eurTotal, account(payable, "EUR").BalanceMinor)
	require.Equal(t, eurTotal, account(ledger.AccountPlatformCash, "EUR").BalanceMinor)
	require.Equal(t, -usdTotal, account(payable, "USD").BalanceMinor)
	lines = trialBalance()
	require.Equal(t, ledger.CurrencyTotals{Currency: "EUR", Accounts: 2, Balanced: true}, lines["EUR"])
	require.Equal(t, ledger.CurrencyTotals{Currency: "USD", Accounts: 2, Balanced: true}, lines["USD"])

	// The merchant's payable now exists in two currencies.
	_, err := lsvc.GetAccount(k.Ctx, payable, "")
	de := testkit.RequireCode(t, err, riverbank.ECURRENCYREQUIRED)
	require.Equal(t, []string{"EUR", "USD"}, de.Details["currencies"])

	require.Zero(t, k.Count(t, `SELECT count(*) FROM river_job WHERE kind LIKE 'ledger.%'
		AND (coalesce(array_length(errors, 1), 0) > 0 OR state IN ('discarded', 'retryable', 'cancelled'))`), "a ledger job failed")
}
