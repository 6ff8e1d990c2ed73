package orders_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/orders"
)

func TestPutProduct(t *testing.T) {
	t.Parallel()

	t.Run("CreatesThenUpdates", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sku := b.sku("TEA")
		p, created, err := b.svc.PutProduct(b.ctx, orders.ProductInput{SKU: sku, Name: "Tea", PriceMinor: 1200, Currency: "CNY", Stock: 10})
		require.NoError(t, err)
		require.True(t, created)
		require.Equal(t, orders.Product{SKU: sku, Name: "Tea", PriceMinor: 1200, Currency: "CNY", StockOnHand: 10, StockAvailable: 10, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}, *p)

		p, created, err = b.svc.PutProduct(b.ctx, orders.ProductInput{SKU: sku, Name: "Green tea", PriceMinor: 1500, Currency: "CNY", Stock: 4})
		require.NoError(t, err)
		require.False(t, created)
		require.Equal(t, "Green tea", p.Name)
		require.EqualValues(t, 1500, p.PriceMinor)
		require.EqualValues(t, 4, p.StockOnHand)

		got, err := b.svc.GetProduct(b.ctx, sku)
		require.NoError(t, err)
		require.Equal(t, p.StockOnHand, got.StockOnHand)
	})

	t.Run("AnyCurrency", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sku := b.sku("USD")
		p, created, err := b.svc.PutProduct(b.ctx, orders.ProductInput{SKU: sku, Name: "Dollar tea", PriceMinor: 100, Currency: "USD", Stock: 1})
		require.NoError(t, err)
		require.True(t, created)
		require.Equal(t, "USD", p.Currency)
	})

	t.Run("StockBelowReservedIsRefused", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sku := b.sku("RES")
		b.product(t, sku, 100, 10)
		b.order(t, b.buyer(1), sku, 6)
		_, _, err := b.svc.PutProduct(b.ctx, orders.ProductInput{SKU: sku, Name: "x", PriceMinor: 999, Currency: "CNY", Stock: 5})
		de := requireCode(t, err, riverbank.ECONFLICT)
		require.EqualValues(t, 6, de.Details["stock_reserved"])
		// Nothing of the refused update was written.
		p, err := b.svc.GetProduct(b.ctx, sku)
		require.NoError(t, err)
		require.Equal(t, "Product "+sku, p.Name)
		require.EqualValues(t, 100, p.PriceMinor)
		require.Equal(t, orders.Product{SKU: sku, Name: p.Name, PriceMinor: 100, Currency: "CNY", StockOnHand: 10, StockReserved: 6, StockAvailable: 4, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}, *p)

		// Exactly the reserved count is fine.
		_, _, err = b.svc.PutProduct(b.ctx, orders.ProductInput{SKU: sku, Name: "x", PriceMinor: 100, Currency: "CNY", Stock: 6})
		require.NoError(t, err)
	})

	t.Run("OnlyPutChangesOnHandPlusSold", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sku := b.sku("SUM")
		b.product(t, sku, 100, 10)
		o := b.order(t, b.buyer(1), sku, 3)
		b.requireStockMatchesOrders(t, sku, 10)
		_, err := b.svc.Confirm(b.ctx, o.ID)
		require.NoError(t, err)
		require.Equal(t, stock{OnHand: 7, Reserved: 0, Sold: 3}, b.stock(t, sku))
		b.requireStockMatchesOrders(t, sku, 10)

		// A restock sets on hand; sold is history and stays.
		_, _, err = b.svc.PutProduct(b.ctx, orders.ProductInput{SKU: sku, Name: "x", PriceMinor: 100, Currency: "CNY", Stock: 20})
		require.NoError(t, err)
		require.Equal(t, stock{OnHand: 20, Reserved: 0, Sold: 3}, b.stock(t, sku))
		b.requireStockMatchesOrders(t, sku, 23)
	})

	t.Run("BadInput", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		for name, in := range map[string]orders.ProductInput{
			"BadSKU":        {SKU: "no spaces", Name: "x", PriceMinor: 1, Currency: "CNY"},
			"EmptyName":     {SKU: b.sku("A"), Name: "", PriceMinor: 1, Currency: "CNY"},
			"ControlInName": {SKU: b.sku("A"), Name: "a\x00b", PriceMinor: 1, Currency: "CNY"},
			"ZeroPrice":     {SKU: b.sku("A"), Name: "x", PriceMinor: 0, Currency: "CNY"},
			"HugePrice":     {SKU: b.sku("A"), Name: "x", PriceMinor: orders.MaxPriceMinor + 1, Currency: "CNY"},
			"BadCurrency":   {SKU: b.sku("A"), Name: "x", PriceMinor: 1, Currency: "cny"},
			"NegativeStock": {SKU: b.sku("A"), Name: "x", PriceMinor: 1, Currency: "CNY", Stock: -1},
			"HugeStock":     {SKU: b.sku("A"), Name: "x", PriceMinor: 1, Currency: "CNY", Stock: orders.MaxStock + 1},
		} {
			_, _, err := b.svc.PutProduct(b.ctx, in)
			require.Equal(t, riverbank.EINVALID, riverbank.ErrorCode(err), "%s: %v", name, err)
		}
		require.Zero(t, b.count(t, "SELECT count(*) FROM product WHERE sku = $1", b.sku("A")))
	})

	t.Run("GetUnknownIsNotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.svc.GetProduct(b.ctx, b.sku("NOPE"))
		requireCode(t, err, riverbank.ENOTFOUND)
	})
}
