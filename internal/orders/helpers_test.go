package orders_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/orders"
	"riverbank/internal/testdb"
	"riverbank/internal/testkit"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// testBundle is what an orders test works with. setup gives a rolled-back
// transaction on the package's shared database (tx set, pool nil); setupDB
// gives a database of the test's own with committed data, for tests that
// run goroutines (pool set).
type testBundle struct {
	ctx    context.Context
	pool   *pgxpool.Pool
	dbtx   db.DBTX
	store  *db.Store
	svc    *orders.Service
	suffix string // keeps skus and buyer ids unique within the shared database
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	k := testkit.Tx(t)
	return &testBundle{ctx: k.Ctx, dbtx: k.Tx, store: k.Store, svc: k.Services.Orders, suffix: k.Suffix}
}

func setupDB(t *testing.T) *testBundle {
	t.Helper()
	// A dozen connections: the goroutines race in Postgres (and queue for
	// the rest in the pool), while parallel tests stay under max_connections.
	k := testkit.DB(t, testkit.DBOptions{MaxConns: 12})
	return &testBundle{ctx: k.Ctx, pool: k.Pool, dbtx: k.Pool, store: k.Store, svc: k.Services.Orders, suffix: k.Suffix}
}

func randSuffix() string { return testkit.Suffix() }

// sku and buyer return identifiers unique to this test.
func (b *testBundle) sku(name string) string      { return name + "-" + b.suffix }
func (b *testBundle) buyer(i int) string          { return fmt.Sprintf("buyer-%d-%s", i, b.suffix) }
func (b *testBundle) merchant(name string) string { return name + "-" + b.suffix }

func (b *testBundle) product(t testing.TB, sku string, price, stock int64) {
	t.Helper()
	_, _, err := b.svc.PutProduct(b.ctx, orders.ProductInput{SKU: sku, Name: "Product " + sku, PriceMinor: price, Currency: "CNY", Stock: stock})
	require.NoError(t, err)
}

// stock is a product's counters read straight from the table.
type stock struct{ OnHand, Reserved, Sold int64 }

func (b *testBundle) stock(t testing.TB, sku string) stock {
	t.Helper()
	var s stock
	require.NoError(t, b.dbtx.QueryRow(b.ctx, "SELECT stock_on_hand, stock_reserved, sold FROM product_stock WHERE sku = $1", sku).Scan(&s.OnHand, &s.Reserved, &s.Sold))
	return s
}

func (b *testBundle) count(t testing.TB, query string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, b.dbtx.QueryRow(b.ctx, query, args...).Scan(&n))
	return n
}

// order places a one-line order and requires success.
func (b *testBundle) order(t testing.TB, buyer, sku string, qty int64) *orders.Order {
	t.Helper()
	o, created, err := b.svc.Create(b.ctx, orders.CreateInput{BuyerID: buyer, MerchantID: b.merchant("m"), Identifier: "id-" + randSuffix(), Items: []orders.ItemInput{{SKU: sku, Quantity: qty}}})
	require.NoError(t, err)
	require.True(t, created)
	return o
}

// requireStockMatchesOrders checks the stock invariants of SPEC §3 against
// the orders in SQL: counters never negative (CHECKs), on_hand + sold equal
// to what PUT /products set, reserved equal to what CREATED orders hold,
// sold equal to what confirmed-and-beyond orders took; so every cancelled or
// expired order released exactly what it held.
func (b *testBundle) requireStockMatchesOrders(t testing.TB, sku string, onHandPlusSold int64) {
	t.Helper()
	s := b.stock(t, sku)
	require.Equal(t, onHandPlusSold, s.OnHand+s.Sold, "on_hand + sold of %s changed outside PUT /products", sku)
	reserved := b.count(t, `SELECT coalesce(sum(i.quantity), 0)::bigint FROM order_item i JOIN orders o ON o.id = i.order_id
		WHERE i.sku = $1 AND o.status = 'CREATED'`, sku)
	require.Equal(t, reserved, s.Reserved, "reserved of %s", sku)
	sold := b.count(t, `SELECT coalesce(sum(i.quantity), 0)::bigint FROM order_item i JOIN orders o ON o.id = i.order_id
		WHERE i.sku = $1 AND o.status IN ('CONFIRMED', 'PAID', 'SHIPPED', 'COMPLETED')`, sku)
	require.Equal(t, sold, s.Sold, "sold of %s", sku)
	require.GreaterOrEqual(t, s.OnHand, s.Reserved)
}

// requireCode checks err carries the domain code.
func requireCode(t testing.TB, err error, code string) *riverbank.Error {
	t.Helper()
	return testkit.RequireCode(t, err, code)
}

// status reads an order's status straight from the table.
func (b *testBundle) status(t testing.TB, id int64) orders.Status {
	t.Helper()
	var s string
	require.NoError(t, b.dbtx.QueryRow(b.ctx, "SELECT status::text FROM orders WHERE id = $1", id).Scan(&s))
	return orders.Status(s)
}

// jobs returns the River jobs of an order by kind, with their state and
// scheduled_at.
type jobRow struct {
	Kind, State string
	ScheduledAt time.Time
}

func (b *testBundle) jobs(t testing.TB, orderID int64) []jobRow {
	t.Helper()
	rows, err := b.dbtx.Query(b.ctx, `SELECT kind, state::text, scheduled_at FROM river_job
		WHERE args @> jsonb_build_object('order_id', $1::bigint) AND kind LIKE 'order.%' ORDER BY kind, id`, orderID)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[jobRow])
	require.NoError(t, err)
	return out
}
