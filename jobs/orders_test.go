package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/ledger"
	"riverbank/internal/orders"
	"riverbank/internal/testkit"
	"riverbank/jobs"
)

// ordersJobsBundle is a database of the test's own with the orders service
// and the process's real River client (every worker and periodic job of
// jobs.NewRegistration), built but not started.
type ordersJobsBundle struct {
	ctx    context.Context
	pool   *pgxpool.Pool
	store  *db.Store
	svc    *orders.Service
	client *river.Client[pgx.Tx]
}

func setupOrdersJobs(t *testing.T, paymentTimeout time.Duration) *ordersJobsBundle {
	t.Helper()
	k := testkit.DB(t, testkit.DBOptions{Configure: func(cfg *config.Config) { cfg.OrderPaymentTimeout = paymentTimeout }})
	client := k.Client(t, nil)
	return &ordersJobsBundle{ctx: k.Ctx, pool: k.Pool, store: k.Store, svc: k.Services.Orders, client: client}
}

func (b *ordersJobsBundle) start(t *testing.T) {
	t.Helper()
	testkit.Start(t, b.client)
}

func (b *ordersJobsBundle) product(t *testing.T, sku string, price, stock int64) {
	t.Helper()
	_, _, err := b.svc.PutProduct(b.ctx, orders.ProductInput{SKU: sku, Name: sku, PriceMinor: price, Currency: "CNY", Stock: stock})
	require.NoError(t, err)
}

func (b *ordersJobsBundle) order(t *testing.T, buyer, sku string, qty int64) *orders.Order {
	t.Helper()
	o, _, err := b.svc.Create(b.ctx, orders.CreateInput{BuyerID: buyer, MerchantID: "shop", Identifier: "c-1", Items: []orders.ItemInput{{SKU: sku, Quantity: qty}}})
	require.NoError(t, err)
	return o
}

func (b *ordersJobsBundle) stock(t *testing.T, sku string) [3]int64 {
	t.Helper()
	var s [3]int64
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT stock_on_hand, stock_reserved, sold FROM product_stock WHERE sku = $1", sku).Scan(&s[0], &s[1], &s[2]))
	return s
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testkit.WaitFor(t, timeout, what, cond)
}

func (b *ordersJobsBundle) get(t *testing.T, id int64) *orders.Order {
	t.Helper()
	o, err := b.svc.Get(b.ctx, id)
	require.NoError(t, err)
	return o
}

// TestOrderJobsEndToEnd runs the real workers: an unpaid order is
// confirmed by order.confirm and then, after the payment timeout, cancelled
// by the periodic order.expire sweep with its stock returned once; a paid
// order outlives the sweeps untouched, and its payment reaches the ledger
// balances.
func TestOrderJobsEndToEnd(t *testing.T) {
	t.Parallel()
	b := setupOrdersJobs(t, time.Second)
	b.start(t)
	b.product(t, "E2E", 300, 10)

	unpaid := b.order(t, "buyer-1", "E2E", 2)
	paid := b.order(t, "buyer-2", "E2E", 3)
	_, _, err := b.svc.Pay(b.ctx, paid.ID, orders.PayInput{PaymentID: "pay-e2e", AmountMinor: 900})
	require.NoError(t, err)

	waitFor(t, 10*time.Second, "order.confirm to confirm the unpaid order", func() bool {
		return b.get(t, unpaid.ID).Status != orders.StatusCreated
	})
	o := b.get(t, unpaid.ID)
	require.NotNil(t, o.ConfirmedAt, "confirmed before it expired")

	// The leader inserts the sweep every orders.ExpireInterval.
	waitFor(t, 15*time.Second, "order.expire to cancel the unpaid order", func() bool {
		return b.get(t, unpaid.ID).Status == orders.StatusCancelled
	})
	o = b.get(t, unpaid.ID)
	require.Equal(t, orders.ReasonPaymentTimeout, *o.CancelReason)
	require.False(t, o.CancelledAt.Before(o.ExpiresAt), "cancelled at %s, expires at %s", o.CancelledAt, o.ExpiresAt)

	waitFor(t, 15*time.Second, "a sweep to complete after the paid order's deadline", func() bool {
		var n int64
		require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT count(*) FROM river_job WHERE kind = 'order.expire'
			AND state = 'completed' AND attempted_at > $1`, paid.ExpiresAt).Scan(&n))
		return n > 0
	})
	require.Equal(t, orders.StatusPaid, b.get(t, paid.ID).Status)
	require.Equal(t, [3]int64{7, 0, 3}, b.stock(t, "E2E"))

	var confirmJobs, badJobs int64
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM river_job WHERE kind = 'order.confirm' AND state = 'completed'").Scan(&confirmJobs))
	// One lingering confirmer per burst of orders: the two orders were
	// created apart, so one or two confirmers ran.
	require.True(t, confirmJobs == 1 || confirmJobs == 2, "confirm jobs completed: %d", confirmJobs)
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM river_job WHERE kind LIKE 'order.%' AND coalesce(array_length(errors, 1), 0) > 0").Scan(&badJobs))
	require.Zero(t, badJobs)

	lsvc := ledger.NewService(b.store)
	waitFor(t, 10*time.Second, "the payment to be applied to platform:cash", func() bool {
		a, err := lsvc.GetAccount(b.ctx, ledger.AccountPlatformCash, "")
		require.NoError(t, err)
		return a.BalanceMinor == 900
	})
	a, err := lsvc.GetAccount(b.ctx, ledger.MerchantPayable("shop"), "")
	require.NoError(t, err)
	require.EqualValues(t, -900, a.BalanceMinor)
}

// job builds the job River hands a worker.
func job[T river.JobArgs](id int64, args T) *river.Job[T] {
	return &river.Job[T]{JobRow: &rivertype.JobRow{ID: id, Attempt: 1, Kind: args.Kind()}, Args: args}
}

// TestOrderExpireWorkerTwice works the order.expire sweep twice over an
// order past its deadline (River delivers at least once): the stock is
// released once.
func TestOrderExpireWorkerTwice(t *testing.T) {
	t.Parallel()
	for _, confirmFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("Confirmed=%v", confirmFirst), func(t *testing.T) {
			t.Parallel()
			b := setupOrdersJobs(t, time.Hour)
			b.product(t, "TWICE", 100, 5)
			o := b.order(t, "buyer-1", "TWICE", 2)
			if confirmFirst {
				_, err := b.svc.Confirm(b.ctx, o.ID)
				require.NoError(t, err)
			}
			_, err := b.pool.Exec(b.ctx, "UPDATE orders SET expires_at = now() - interval '1 second' WHERE id = $1", o.ID)
			require.NoError(t, err)
			w := &jobs.OrderExpireWorker{Orders: b.svc}
			require.NoError(t, w.Work(b.ctx, job(1, orders.ExpireArgs{})))
			require.NoError(t, w.Work(b.ctx, job(2, orders.ExpireArgs{})))
			got := b.get(t, o.ID)
			require.Equal(t, orders.StatusCancelled, got.Status)
			require.Equal(t, orders.ReasonPaymentTimeout, *got.CancelReason)
			require.Equal(t, [3]int64{5, 0, 0}, b.stock(t, "TWICE"))
			var cancels int64
			require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM order_event WHERE order_id = $1 AND to_status = 'CANCELLED'", o.ID).Scan(&cancels))
			require.EqualValues(t, 1, cancels)
		})
	}
}

// TestOrderExpireWorkerBatches: a sweep with a batch of 3 cancels all of 8
// due orders (CREATED and CONFIRMED ones, over two products) and leaves an
// order not yet due and a paid one alone; the stock is exact.
func TestOrderExpireWorkerBatches(t *testing.T) {
	t.Parallel()
	b := setupOrdersJobs(t, time.Hour)
	b.product(t, "BA", 100, 50)
	b.product(t, "BB", 100, 50)
	var due []int64
	for i := range 8 {
		sku := []string{"BA", "BB"}[i%2]
		o := b.order(t, fmt.Sprintf("buyer-%d", i), sku, 2)
		if i%3 == 0 {
			_, err := b.svc.Confirm(b.ctx, o.ID)
			require.NoError(t, err)
		}
		due = append(due, o.ID)
	}
	later := b.order(t, "buyer-later", "BA", 1)
	paid := b.order(t, "buyer-paid", "BB", 1)
	_, _, err := b.svc.Pay(b.ctx, paid.ID, orders.PayInput{PaymentID: "pay-batch", AmountMinor: 100})
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, "UPDATE orders SET expires_at = now() - interval '1 second' WHERE id = ANY($1) OR id = $2", due, paid.ID)
	require.NoError(t, err)

	w := &jobs.OrderExpireWorker{Orders: b.svc, Batch: 3}
	require.NoError(t, w.Work(b.ctx, job(1, orders.ExpireArgs{})))
	for _, id := range due {
		got := b.get(t, id)
		require.Equal(t, orders.StatusCancelled, got.Status)
		require.Equal(t, orders.ReasonPaymentTimeout, *got.CancelReason)
	}
	require.Equal(t, orders.StatusCreated, b.get(t, later.ID).Status)
	require.Equal(t, orders.StatusPaid, b.get(t, paid.ID).Status)
	// BA holds the later order's reservation; BB the paid order's sale.
	require.Equal(t, [3]int64{50, 1, 0}, b.stock(t, "BA"))
	require.Equal(t, [3]int64{49, 0, 1}, b.stock(t, "BB"))
	var n int64
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT count(*) FROM order_event WHERE order_id = ANY($1) AND to_status = 'CANCELLED'
		AND actor = 'order.expire' AND detail = 'payment_timeout'`, due).Scan(&n))
	require.EqualValues(t, len(due), n)
	require.NoError(t, b.pool.QueryRow(b.ctx, `SELECT count(*) FROM event WHERE type = 'order.cancelled' AND subject_id = ANY($1)`, pgIDs(due)).Scan(&n))
	require.EqualValues(t, len(due), n)
}

// pgIDs renders ids as the event table's subject_id text values.
func pgIDs(ids []int64) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = fmt.Sprint(id)
	}
	return out
}

// TestOrderConfirmWorker: confirms a CREATED order once, is a no-op after,
// and cancels (never retries) a job for an order that does not exist; a
// job whose order waits confirms the other waiting orders too, in batches.
func TestOrderConfirmWorker(t *testing.T) {
	t.Parallel()
	b := setupOrdersJobs(t, time.Hour)
	b.product(t, "CONF", 100, 5)
	o := b.order(t, "buyer-1", "CONF", 2)
	w := &jobs.OrderConfirmWorker{Orders: b.svc}
	require.NoError(t, w.Work(b.ctx, job(1, orders.ConfirmArgs{OrderID: o.ID})))
	require.NoError(t, w.Work(b.ctx, job(2, orders.ConfirmArgs{OrderID: o.ID})))
	require.Equal(t, orders.StatusConfirmed, b.get(t, o.ID).Status)
	require.Equal(t, [3]int64{3, 0, 2}, b.stock(t, "CONF"))

	err := w.Work(b.ctx, job(3, orders.ConfirmArgs{OrderID: 1 << 62}))
	var cancel *river.JobCancelError
	require.True(t, errors.As(err, &cancel), "want a JobCancel error, got %v", err)

	// Seven waiting orders over two products; one job (batch 2) confirms
	// them all, oldest first, and a later job for one of them is a no-op.
	b.product(t, "CB1", 100, 20)
	b.product(t, "CB2", 100, 20)
	var ids []int64
	for i := range 7 {
		sku := []string{"CB1", "CB2"}[i%2]
		ids = append(ids, b.order(t, fmt.Sprintf("buyer-b%d", i), sku, 1).ID)
	}
	w = &jobs.OrderConfirmWorker{Orders: b.svc, Batch: 2}
	require.NoError(t, w.Work(b.ctx, job(4, orders.ConfirmArgs{OrderID: ids[6]})))
	for _, id := range ids {
		require.Equal(t, orders.StatusConfirmed, b.get(t, id).Status, "order %d", id)
	}
	require.Equal(t, [3]int64{16, 0, 4}, b.stock(t, "CB1"))
	require.Equal(t, [3]int64{17, 0, 3}, b.stock(t, "CB2"))
	require.NoError(t, w.Work(b.ctx, job(5, orders.ConfirmArgs{OrderID: ids[0]})))
	var n int64
	require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM order_event WHERE order_id = ANY($1) AND to_status = 'CONFIRMED'", ids).Scan(&n))
	require.EqualValues(t, len(ids), n)
}

// TestOrderSweepWorker re-enqueues the confirmation of an order whose
// confirm job was lost, through the registered periodic job's worker.
func TestOrderSweepWorker(t *testing.T) {
	t.Parallel()
	b := setupOrdersJobs(t, time.Hour)
	b.product(t, "SWEEP", 100, 5)
	o := b.order(t, "buyer-1", "SWEEP", 1)
	_, err := b.pool.Exec(b.ctx, "DELETE FROM river_job WHERE kind = 'order.confirm'")
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, "UPDATE orders SET created_at = created_at - interval '5 minutes' WHERE id = $1", o.ID)
	require.NoError(t, err)

	b.start(t) // the sweep runs on start (RunOnStart) and its confirm job follows
	waitFor(t, 15*time.Second, "the sweeper's confirm job to confirm the order", func() bool {
		return b.get(t, o.ID).Status == orders.StatusConfirmed
	})
	// The sweep's own completion is recorded asynchronously, possibly after
	// the confirm job it enqueued has run.
	waitFor(t, 5*time.Second, "the sweep job to complete", func() bool {
		var sweeps int64
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT count(*) FROM river_job WHERE kind = 'order.sweep' AND state = 'completed'").Scan(&sweeps))
		return sweeps > 0
	})
}

// TestOrderConfirmerNoLostWakeup: orders arrive in bursts while lingering
// confirmers with a tiny budget keep finishing (each final transaction
// deletes the confirm signal under the exclusive lock, racing the creators
// that are asking for a confirmer); with no sweep to rescue them, every
// order must still be confirmed, by a handful of confirmer jobs rather than
// one per order, and no signal is left behind.
func TestOrderConfirmerNoLostWakeup(t *testing.T) {
	t.Parallel()
	k := testkit.DB(t, testkit.DBOptions{MaxConns: 24})
	svc := k.Services.Orders
	workers := river.NewWorkers()
	river.AddWorker(workers, &jobs.OrderConfirmWorker{Orders: svc, Store: k.Store, Budget: 3 * time.Millisecond, Linger: time.Millisecond, Batch: 7})
	client, err := river.NewClient(riverpgxv5.New(k.Pool), &river.Config{
		Logger:            k.Services.Logger,
		FetchCooldown:     jobs.FetchCooldown,
		FetchPollInterval: jobs.FetchPollInterval,
		Queues:            map[string]river.QueueConfig{jobs.QueueDefault: {MaxWorkers: 4}},
		Workers:           workers,
	})
	require.NoError(t, err)
	testkit.Start(t, client)
	const writers, perWriter = 8, 40
	for _, sku := range []string{"LW-A", "LW-B"} {
		_, _, err := svc.PutProduct(k.Ctx, orders.ProductInput{SKU: sku, Name: sku, PriceMinor: 100, Currency: "CNY", Stock: writers * perWriter * 2})
		require.NoError(t, err)
	}

	var wg sync.WaitGroup
	errs := make([]error, writers)
	for g := range writers {
		wg.Go(func() {
			for j := range perWriter {
				_, _, err := svc.Create(k.Ctx, orders.CreateInput{
					BuyerID: fmt.Sprintf("lw-%d", g), MerchantID: "shop", Identifier: fmt.Sprintf("o-%d", j),
					Items: []orders.ItemInput{{SKU: "LW-A", Quantity: 1}, {SKU: "LW-B", Quantity: 2}},
				})
				if err != nil {
					errs[g] = err
					return
				}
				if j%5 == 0 {
					time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond) // let confirmers finish between bursts
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	testkit.WaitFor(t, 30*time.Second, "every order confirmed and the confirmers finished", func() bool {
		return k.Count(t, "SELECT count(*) FROM orders WHERE status <> 'CONFIRMED'") == 0 &&
			k.Count(t, "SELECT count(*) FROM river_job WHERE kind = 'order.confirm' AND state NOT IN ('completed')") == 0
	})
	require.Zero(t, k.Count(t, "SELECT count(*) FROM order_confirm_signal"))
	require.Zero(t, k.Count(t, "SELECT count(*) FROM product_stock_pending WHERE (on_hand, reserved, sold) <> (0, 0, 0)"), "every confirmer folds its batches' stock moves before it ends")
	require.Zero(t, k.Count(t, "SELECT count(*) FROM river_job WHERE coalesce(array_length(errors, 1), 0) > 0"))
	jobsRun := k.Count(t, "SELECT count(*) FROM river_job WHERE kind = 'order.confirm'")
	require.Positive(t, jobsRun)
	require.Less(t, jobsRun, int64(writers*perWriter), "confirmers are shared by orders, not one per order")
	require.Zero(t, k.Count(t, "SELECT count(*) FROM river_job WHERE kind = 'order.confirm' AND (args->>'order_id')::bigint <> 0"))
	t.Logf("%d orders confirmed by %d lingering confirmer jobs", writers*perWriter, jobsRun)
	var reserved, sold int64
	require.NoError(t, k.Pool.QueryRow(k.Ctx, "SELECT sum(stock_reserved), sum(sold) FROM product_stock WHERE sku LIKE 'LW-%'").Scan(&reserved, &sold))
	require.Zero(t, reserved)
	require.EqualValues(t, writers*perWriter*3, sold)
}
