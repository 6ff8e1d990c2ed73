package orders_test

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"riverbank/internal/db"
	"riverbank/internal/orders"
)

func TestSweep(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	sku := b.sku("SW")
	b.product(t, sku, 100, 100)

	lost := b.order(t, b.buyer(1), sku, 1)      // old, its confirmer's job discarded
	_ = b.order(t, b.buyer(2), sku, 1)          // no live job, but < 1 minute old
	live := b.order(t, b.buyer(3), sku, 1)      // old, a confirm job of its own still available
	confirmed := b.order(t, b.buyer(4), sku, 1) // old, but not CREATED any more
	_, err := b.svc.Confirm(b.ctx, confirmed.ID)
	require.NoError(t, err)
	// The orders asked for one lingering confirmer (order_id 0); it was
	// lost. live has a job of its own (as an earlier sweep inserts).
	_, err = b.pool.Exec(b.ctx, `UPDATE river_job SET state = 'discarded', finalized_at = now() WHERE kind = 'order.confirm'`)
	require.NoError(t, err)
	require.NoError(t, b.store.InTx(b.ctx, func(tx *db.Tx) error {
		_, err := tx.Insert(b.ctx, orders.ConfirmArgs{OrderID: live.ID}, nil)
		return err
	}))
	_, err = b.pool.Exec(b.ctx, `UPDATE orders SET created_at = created_at - interval '2 minutes' WHERE id = ANY($1)`,
		[]int64{lost.ID, live.ID, confirmed.ID})
	require.NoError(t, err)

	n, err := orders.StaleCount(b.ctx, b.store.Queries())
	require.NoError(t, err)
	require.EqualValues(t, 1, n)

	swept, err := b.svc.Sweep(b.ctx)
	require.NoError(t, err)
	require.Equal(t, 1, swept)
	var states []string
	for _, j := range b.jobs(t, lost.ID) {
		if j.Kind == orders.KindConfirm {
			states = append(states, j.State)
		}
	}
	require.ElementsMatch(t, []string{"available"}, states)
	require.Len(t, b.jobs(t, live.ID), 1, "a live confirm job is not doubled")

	// Now every stale order has a live job: the gauge is 0 and a second
	// sweep inserts nothing.
	n, err = orders.StaleCount(b.ctx, b.store.Queries())
	require.NoError(t, err)
	require.Zero(t, n)
	swept, err = b.svc.Sweep(b.ctx)
	require.NoError(t, err)
	require.Zero(t, swept)
	// live's and lost's, and the lingering confirmer the first sweep
	// enqueued again (its job was discarded with the signal standing).
	require.EqualValues(t, 3, b.count(t, "SELECT count(*) FROM river_job WHERE kind = 'order.confirm' AND state = 'available'"))
}

// TestSweepReadsThePartialIndex checks the sweeper's query is served by the
// partial index of CREATED orders, not a scan of all orders, on a table
// where almost every order has moved on. The query text is a copy of
// StaleCreatedOrders in queries/orders.sql.
func TestSweepReadsThePartialIndex(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	sku := b.sku("IX")
	b.product(t, sku, 100, 10)
	b.order(t, b.buyer(1), sku, 1)
	// 20,000 finished orders, written directly.
	_, err := b.pool.Exec(b.ctx, `INSERT INTO orders (buyer_id, merchant_id, identifier, request_hash, status, total_minor, currency,
			created_at, expires_at, cancelled_at, cancel_reason)
		SELECT 'bulk', 'm', 'i' || g, 'h', 'CANCELLED', 100, 'CNY', now() - interval '1 day', now(), now(), 'bulk'
		FROM generate_series(1, 20000) g`)
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, "ANALYZE orders")
	require.NoError(t, err)

	rows, err := b.pool.Query(b.ctx, `EXPLAIN SELECT o.id
		FROM orders o
		WHERE o.status = 'CREATED'
		  AND o.created_at < now() - $1::bigint * interval '1 microsecond'
		  AND NOT EXISTS (
		      SELECT 1 FROM river_job j
		      WHERE j.args @> jsonb_build_object('order_id', o.id)
		        AND j.kind = 'order.confirm'
		        AND j.state IN ('available', 'pending', 'retryable', 'running', 'scheduled')
		  )
		ORDER BY o.created_at, o.id
		LIMIT $2`, orders.StaleAfter.Microseconds(), orders.SweepBatch)
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	plan := strings.Join(lines, "\n")
	require.Contains(t, plan, "orders_created_waiting_idx", plan)
	require.NotContains(t, plan, "Seq Scan on orders", plan)
}

func TestListAndEvents(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sku := b.sku("L")
	b.product(t, sku, 100, 100)
	var mine []*orders.Order
	for range 5 {
		mine = append(mine, b.order(t, b.buyer(1), sku, 1))
	}
	theirs := b.order(t, b.buyer(2), sku, 1)
	_, err := b.svc.Cancel(b.ctx, mine[1].ID, "x")
	require.NoError(t, err)

	// Pages of 2, newest first, for buyer 1.
	var got []int64
	before := int64(0)
	for {
		page, err := b.svc.List(b.ctx, orders.ListParams{BuyerID: b.buyer(1), BeforeID: before, Limit: 2})
		require.NoError(t, err)
		for _, o := range page {
			require.Equal(t, b.buyer(1), o.BuyerID)
			require.Len(t, o.Items, 1)
			got = append(got, o.ID)
		}
		if len(page) < 2 {
			break
		}
		before = page[len(page)-1].ID
	}
	require.Equal(t, []int64{mine[4].ID, mine[3].ID, mine[2].ID, mine[1].ID, mine[0].ID}, got)

	cancelled, err := b.svc.List(b.ctx, orders.ListParams{BuyerID: b.buyer(1), Status: orders.StatusCancelled, Limit: 50})
	require.NoError(t, err)
	require.Len(t, cancelled, 1)
	require.Equal(t, mine[1].ID, cancelled[0].ID)

	// By status across buyers (the shared database may hold other tests'
	// orders only inside their own, invisible transactions).
	created, err := b.svc.List(b.ctx, orders.ListParams{Status: orders.StatusCreated, Limit: 500})
	require.NoError(t, err)
	ids := map[int64]bool{}
	for _, o := range created {
		require.Equal(t, orders.StatusCreated, o.Status)
		ids[o.ID] = true
	}
	require.True(t, ids[theirs.ID])
	require.False(t, ids[mine[1].ID])

	all, err := b.svc.List(b.ctx, orders.ListParams{Limit: 3})
	require.NoError(t, err)
	require.Len(t, all, 3)
	require.Equal(t, theirs.ID, all[0].ID)

	_, err = b.svc.List(b.ctx, orders.ListParams{Status: "NOPE", Limit: 1})
	requireCode(t, err, "validation_failed")

	evs, err := b.svc.Events(b.ctx, mine[1].ID, 0, 1)
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, orders.StatusCreated, evs[0].To)
	evs, err = b.svc.Events(b.ctx, mine[1].ID, evs[0].ID, 50)
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.Equal(t, orders.StatusCancelled, evs[0].To)
	require.Equal(t, "x", *evs[0].Detail)

	_, err = b.svc.Events(b.ctx, 1<<62, 0, 50)
	requireCode(t, err, "not_found")
	_, err = b.svc.Get(b.ctx, 1<<62)
	requireCode(t, err, "not_found")
}

// TestSweepRepairsLostConfirmer: the lingering confirmer was discarded
// without its final transaction, so the confirm signal still stands and no
// new order inserts a job; the sweep enqueues a confirmer again (once:
// a second sweep finds it live).
func TestSweepRepairsLostConfirmer(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	sku := b.sku("LOST")
	b.product(t, sku, 100, 10)
	b.order(t, b.buyer(1), sku, 1)
	_, err := b.pool.Exec(b.ctx, `UPDATE river_job SET state = 'discarded', finalized_at = now() WHERE kind = 'order.confirm'`)
	require.NoError(t, err)
	b.order(t, b.buyer(2), sku, 1)
	require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM river_job WHERE kind = 'order.confirm'"), "the signal stands: the second order inserted no job")
	// A batch that ran before the confirmer was lost left stock moves pending that no
	// fold took (the confirmer folds when it ends): the sweep folds them.
	b.order(t, b.buyer(3), sku, 2)
	_, err = b.svc.ConfirmCreated(b.ctx, 1)
	require.NoError(t, err)
	require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM product_stock_pending WHERE (on_hand, reserved, sold) <> (0, 0, 0)"))

	_, err = b.svc.Sweep(b.ctx)
	require.NoError(t, err)
	require.Zero(t, b.count(t, "SELECT count(*) FROM product_stock_pending WHERE (on_hand, reserved, sold) <> (0, 0, 0)"), "the sweep folded the lost confirmer's moves")
	require.Equal(t, stock{OnHand: 9, Reserved: 3, Sold: 1}, b.stock(t, sku))
	require.EqualValues(t, 1, b.count(t, "SELECT sold FROM product WHERE sku = $1", sku))
	require.EqualValues(t, 1, b.count(t, `SELECT count(*) FROM river_job WHERE kind = 'order.confirm' AND state = 'available' AND (args->>'order_id')::bigint = 0`))
	_, err = b.svc.Sweep(b.ctx)
	require.NoError(t, err)
	require.EqualValues(t, 2, b.count(t, "SELECT count(*) FROM river_job WHERE kind = 'order.confirm'"), "unique while live")
}
