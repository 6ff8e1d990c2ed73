package api_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"testing"

	"github.com/danielgtaylor/huma/v2/humatest"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"riverbank/api"
	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/ledger"
	"riverbank/internal/orders"
	"riverbank/internal/testdb"
)

// ordersAPIBundle is the API on a transaction of the package's shared test
// database, rolled back when the test ends; each request runs in a
// savepoint of it, so a test can count rows before and after a request.
type ordersAPIBundle struct {
	ctx    context.Context
	tx     pgx.Tx
	api    humatest.TestAPI
	svc    *orders.Service
	suffix string // keeps skus and buyer ids unique within the shared database
}

func setupOrdersAPI(t *testing.T) *ordersAPIBundle {
	t.Helper()
	tx := testdb.Tx(t)
	// A nil pool is enough for a client that only inserts in a caller's
	// transaction.
	client, err := river.NewClient(riverpgxv5.New(nil), &river.Config{})
	require.NoError(t, err)
	store := db.NewStore(tx, client)
	svc := orders.NewService(store, orders.Options{})
	_, tapi := humatest.New(t)
	api.Register(tapi, &api.Services{
		Config: &config.Config{},
		Logger: slog.New(slog.DiscardHandler),
		Store:  store,
		River:  client,
		Ledger: ledger.NewService(store),
		Orders: svc,
	})
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return &ordersAPIBundle{ctx: context.Background(), tx: tx, api: tapi, svc: svc, suffix: hex.EncodeToString(b)}
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
		(SELECT count(*) FROM river_job), (SELECT coalesce(sum(stock_reserved), 0)::bigint FROM product),
		(SELECT coalesce(sum(sold), 0)::bigint FROM product)`).
		Scan(&w.Products, &w.Orders, &w.Items, &w.Events, &w.Entries, &w.Jobs, &w.Reserved, &w.Sold))
	return w
}

// requireOrdersProblem checks rec is a problem+json response with the
// status and machine-readable code, leaking nothing internal.
func requireOrdersProblem(t *testing.T, rec *httptest.ResponseRecorder, status int, code string) *api.Problem {
	t.Helper()
	require.Equal(t, status, rec.Code, "body: %s", rec.Body.String())
	require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
	p := decodeOrdersJSON[api.Problem](t, rec)
	require.Equal(t, status, p.Status)
	require.Equal(t, code, p.Code, "body: %s", rec.Body.String())
	for _, leak := range []string{"SQLSTATE", "pgx", "pgconn", "riverbank error", "goroutine", ".go:"} {
		require.NotContains(t, rec.Body.String(), leak)
	}
	return &p
}

func decodeOrdersJSON[T any](t *testing.T, rec *httptest.ResponseRecorder) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &v), "body: %s", rec.Body.String())
	return v
}
