package api_test

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/danielgtaylor/huma/v2/humatest"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"riverbank/api"
	"riverbank/internal/orders"
	"riverbank/internal/testkit"
)

// ordersAPIBundle is the API on a transaction of the package's shared test
// database, rolled back when the test ends (testkit.Tx); each request runs
// in a savepoint of it, so a test can count rows before and after a request.
type ordersAPIBundle struct {
	ctx    context.Context
	tx     pgx.Tx
	api    humatest.TestAPI
	svc    *orders.Service
	suffix string // keeps skus and buyer ids unique within the shared database
}

func setupOrdersAPI(t *testing.T) *ordersAPIBundle {
	t.Helper()
	k := testkit.Tx(t)
	return &ordersAPIBundle{ctx: k.Ctx, tx: k.Tx, api: k.API(t), svc: k.Services.Orders, suffix: k.Suffix}
}

func (b *ordersAPIBundle) sku(name string) string { return name + "-" + b.suffix }

func (b *ordersAPIBundle) buyer(name string) string { return name + "-" + b.suffix }

func (b *ordersAPIBundle) product(t *testing.T, sku string, price, stock int64) {
	t.Helper()
	rec := b.api.Put("/v1/products/"+sku, map[string]any{"name": "Product " + sku, "price_minor": price, "currency": "CNY", "stock": stock})
	require.Equal(t, 201, rec.Code, rec.Body.String())
}

// createOrder posts a one-line order and requires 201.
func (b *ordersAPIBundle) createOrder(t *testing.T, buyer, identifier, sku string, qty int64) api.OrderBody {
	t.Helper()
	rec := b.api.Post("/v1/orders", orderRequest(buyer, identifier, sku, qty))
	require.Equal(t, 201, rec.Code, rec.Body.String())
	return decodeOrdersJSON[api.OrderBody](t, rec)
}

func orderRequest(buyer, identifier, sku string, qty int64) map[string]any {
	return map[string]any{"buyer_id": buyer, "merchant_id": "shop-1", "identifier": identifier,
		"items": []map[string]any{{"sku": sku, "quantity": qty}}}
}

// orderWrites counts every row an orders request may write.
type orderWrites struct {
	Products, Orders, Items, Events, Entries, Jobs, Reserved, Sold int64
}

func (b *ordersAPIBundle) writes(t *testing.T) orderWrites {
	t.Helper()
	var w orderWrites
	require.NoError(t, b.tx.QueryRow(b.ctx, `SELECT (SELECT count(*) FROM product), (SELECT count(*) FROM orders),
		(SELECT count(*) FROM order_item), (SELECT count(*) FROM order_event), (SELECT count(*) FROM ledger_entry),
		(SELECT count(*) FROM river_job), (SELECT coalesce(sum(stock_reserved), 0)::bigint FROM product_stock),
		(SELECT coalesce(sum(sold), 0)::bigint FROM product_stock)`).
		Scan(&w.Products, &w.Orders, &w.Items, &w.Events, &w.Entries, &w.Jobs, &w.Reserved, &w.Sold))
	return w
}

// requireOrdersProblem checks a problem+json answer (testkit.RequireProblem).
func requireOrdersProblem(t *testing.T, rec *httptest.ResponseRecorder, status int, code string) *api.Problem {
	t.Helper()
	return testkit.RequireProblem(t, rec, code, status)
}

func decodeOrdersJSON[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	return testkit.DecodeJSON[T](t, rec)
}
