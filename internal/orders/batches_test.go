package orders_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/orders"
	"riverbank/internal/testkit"
)

// TestBatchesRaceEverything runs the batch confirmer and the expiry sweep
// (three runners each, small batches) against payments, cancels and new
// orders over four products, and then checks that every order ended in
// one state through legal steps, each transition recorded once, and the
// stock of every product equal to what its orders hold (SPEC §3).
func TestBatchesRaceEverything(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	skus := []string{b.sku("R1"), b.sku("R2"), b.sku("R3"), b.sku("R4")}
	const perSKU = 1000
	for _, s := range skus {
		b.product(t, s, 10, perSKU)
	}
	// 160 orders of one to three lines; half of them already past their
	// deadline, so the sweep races the confirmer and the payments for them.
	var all []*orders.Order
	for i := range 160 {
		var items []orders.ItemInput
		for j := range 1 + i%3 {
			items = append(items, orders.ItemInput{SKU: skus[(i+j)%len(skus)], Quantity: int64(1 + (i+j)%4)})
		}
		o, _, err := b.svc.Create(b.ctx, orders.CreateInput{BuyerID: b.buyer(i), MerchantID: b.merchant("m"), Identifier: "race", Items: items})
		require.NoError(t, err)
		all = append(all, o)
	}
	var due []int64
	for i, o := range all {
		if i%2 == 0 {
			due = append(due, o.ID)
		}
	}
	_, err := b.pool.Exec(b.ctx, "UPDATE orders SET expires_at = now() - interval '1 second' WHERE id = ANY($1)", due)
	require.NoError(t, err)

	var (
		wg       sync.WaitGroup
		errs     = make(chan error, 1000)
		paid     atomic.Int64
		stop     atomic.Bool
		runnerWG sync.WaitGroup
	)
	start := make(chan struct{})
	runner := func(step func() (int, error)) {
		runnerWG.Go(func() {
			<-start
			for !stop.Load() {
				if _, err := step(); err != nil {
					errs <- err
					return
				}
			}
			// One last pass once the others are done.
			for {
				n, err := step()
				if err != nil {
					errs <- err
					return
				}
				if n == 0 {
					return
				}
			}
		})
	}
	for range 3 {
		runner(func() (int, error) { return b.svc.ConfirmCreated(b.ctx, 7) })
		runner(func() (int, error) { return b.svc.ExpireDue(b.ctx, 5) })
	}
	// Folds of the confirmations' pending stock moves (schema step 13) race
	// all of it; so does a stock take per product (PUT sets on_hand, so it
	// must fold first: the on_hand + sold it leaves is the new total).
	runner(func() (int, error) { return b.svc.FoldStockMoves(b.ctx, true) })
	runner(func() (int, error) { return b.svc.FoldStockMoves(b.ctx, false) })
	total := make([]int64, len(skus))
	for i, s := range skus {
		total[i] = perSKU
		wg.Go(func() {
			<-start
			for k := range 8 {
				p, _, err := b.svc.PutProduct(b.ctx, orders.ProductInput{SKU: s, Name: "Product " + s, PriceMinor: 10, Currency: "CNY", Stock: perSKU + int64(k)})
				if err != nil {
					errs <- err
					return
				}
				total[i] = p.StockOnHand + p.Sold
				time.Sleep(time.Millisecond)
			}
		})
	}
	for i, o := range all {
		switch i % 5 {
		case 1, 3:
			wg.Go(func() {
				<-start
				_, _, err := b.svc.Pay(b.ctx, o.ID, orders.PayInput{PaymentID: fmt.Sprintf("race-%s-%d", b.suffix, o.ID), AmountMinor: o.TotalMinor})
				switch riverbank.ErrorCode(err) {
				case "":
					paid.Add(1)
				case riverbank.EINVALIDTRANSITION:
				default:
					errs <- err
				}
			})
		case 4:
			wg.Go(func() {
				<-start
				_, err := b.svc.Cancel(b.ctx, o.ID, "race")
				if err != nil && riverbank.ErrorCode(err) != riverbank.EINVALIDTRANSITION {
					errs <- err
				}
			})
		}
	}
	// New orders keep arriving while the batches run.
	for i := range 40 {
		wg.Go(func() {
			<-start
			_, _, err := b.svc.Create(b.ctx, orders.CreateInput{BuyerID: b.buyer(1000 + i), MerchantID: b.merchant("m"), Identifier: "late",
				Items: []orders.ItemInput{{SKU: skus[i%len(skus)], Quantity: 1}, {SKU: skus[(i+1)%len(skus)], Quantity: 2}}})
			if err != nil {
				errs <- err
			}
		})
	}
	close(start)
	wg.Wait()
	stop.Store(true)
	runnerWG.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	// Nothing waits: every order was confirmed, paid, cancelled or expired;
	// the due ones are none of CREATED and CONFIRMED.
	require.Zero(t, b.count(t, "SELECT count(*) FROM orders WHERE status = 'CREATED'"))
	require.Zero(t, b.count(t, "SELECT count(*) FROM orders WHERE id = ANY($1) AND status IN ('CREATED', 'CONFIRMED')", due))
	require.Equal(t, paid.Load(), b.count(t, "SELECT count(*) FROM orders WHERE status = 'PAID'"))
	// Every order's history is a legal path with each step once.
	require.Zero(t, b.count(t, `SELECT count(*) FROM (
		SELECT order_id FROM order_event GROUP BY order_id
		HAVING count(*) FILTER (WHERE to_status = 'CREATED') <> 1
		    OR count(*) FILTER (WHERE to_status = 'CONFIRMED') > 1
		    OR count(*) FILTER (WHERE to_status = 'CANCELLED') > 1
		    OR count(*) FILTER (WHERE to_status = 'PAID') > 1) bad`))
	require.Zero(t, b.count(t, `SELECT count(*) FROM orders o WHERE o.status::text <> (
		SELECT e.to_status::text FROM order_event e WHERE e.order_id = o.id ORDER BY e.id DESC LIMIT 1)`), "the last event is the order's status")
	require.Zero(t, b.count(t, `SELECT count(*) FROM order_event e JOIN orders o ON o.id = e.order_id
		WHERE e.actor = 'order.expire' AND (o.cancel_reason IS DISTINCT FROM 'payment_timeout' OR NOT o.id = ANY($1))`, due), "only due orders expired")
	// One feed event per transition.
	require.Zero(t, b.count(t, `SELECT count(*) FROM (
		SELECT o.id FROM orders o
		WHERE (SELECT count(*) FROM order_event e WHERE e.order_id = o.id)
		   <> (SELECT count(*) FROM event v WHERE v.subject_type = 'order' AND v.subject_id = o.id::text)) bad`))
	for i, s := range skus {
		b.requireStockMatchesOrders(t, s, total[i])
	}
	// A last fold empties the log, and the rows then hold the true counters.
	_, err = b.svc.FoldStockMoves(b.ctx, false)
	require.NoError(t, err)
	require.Zero(t, b.count(t, "SELECT count(*) FROM product_stock_pending WHERE (on_hand, reserved, sold) <> (0, 0, 0)"))
	require.Zero(t, b.count(t, `SELECT count(*) FROM product p JOIN product_stock v USING (sku)
		WHERE (p.stock_on_hand, p.stock_reserved, p.sold) <> (v.stock_on_hand, v.stock_reserved, v.sold)`))
	for i, s := range skus {
		b.requireStockMatchesOrders(t, s, total[i])
	}
}

// TestFinishConfirmerWaitsForAskingOrders is the confirmer handoff's
// lost-wakeup case, interleaved by hand: an order created while the
// confirm signal exists asks for no job; if the confirmer's final
// transaction could finish before that order commits, nothing would ever
// confirm it. FinishConfirmerTx must wait for the order's transaction and
// then report it waiting.
func TestFinishConfirmerWaitsForAskingOrders(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	sku := b.sku("FIN")
	b.product(t, sku, 100, 10)
	first := b.order(t, b.buyer(1), sku, 1) // creates the signal
	require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM order_confirm_signal"))
	n, err := b.svc.ConfirmCreated(b.ctx, 10)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, orders.StatusConfirmed, b.status(t, first.ID))

	// The second order's transaction stays open after its create.
	tx, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	defer tx.Rollback(context.WithoutCancel(b.ctx)) //nolint:errcheck
	k := testkit.Tx(t)                              // only for an insert-only River client
	inTx := orders.NewService(db.NewStore(tx, k.Inserter), orders.Options{PaymentTimeout: time.Hour})
	second, created, err := inTx.Create(b.ctx, orders.CreateInput{BuyerID: b.buyer(2), MerchantID: "m", Identifier: "late", Items: []orders.ItemInput{{SKU: sku, Quantity: 1}}})
	require.NoError(t, err)
	require.True(t, created)
	var jobs int64
	require.NoError(t, tx.QueryRow(b.ctx, "SELECT count(*) FROM river_job WHERE kind = 'order.confirm'").Scan(&jobs))
	require.EqualValues(t, 1, jobs, "the signal existed: the second order inserted no job")

	type result struct {
		waiting orders.Waiting
		err     error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		r.err = b.store.InTx(b.ctx, func(ftx *db.Tx) error {
			var err error
			r.waiting, err = orders.FinishConfirmerTx(b.ctx, ftx)
			return err
		})
		done <- r
	}()
	select {
	case r := <-done:
		t.Fatalf("the confirmer finished (waiting=%v, err=%v) while an order that asked for it was uncommitted", r.waiting, r.err)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, tx.Commit(b.ctx))
	r := <-done
	require.NoError(t, r.err)
	require.Equal(t, orders.WaitingFree, r.waiting, "the committed second order waits: the caller re-enqueues the confirmer")
	require.Zero(t, b.count(t, "SELECT count(*) FROM order_confirm_signal"))
	require.Equal(t, orders.StatusCreated, b.status(t, second.ID))
}

// TestFinishConfirmerHeldOrders: an order a payment holds (FOR NO KEY
// UPDATE, as LockOrder takes it) is not one the next confirmer could take
// now: FinishConfirmerTx reports it held (the job comes back a second
// later) rather than free (at once, and again, while the payment runs).
func TestFinishConfirmerHeldOrders(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	sku := b.sku("HELD")
	b.product(t, sku, 100, 10)
	o := b.order(t, b.buyer(1), sku, 1)
	finish := func() orders.Waiting {
		var w orders.Waiting
		require.NoError(t, b.store.InTx(b.ctx, func(tx *db.Tx) error {
			var err error
			w, err = orders.FinishConfirmerTx(b.ctx, tx)
			return err
		}))
		return w
	}
	pay, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	defer pay.Rollback(context.WithoutCancel(b.ctx)) //nolint:errcheck
	_, err = pay.Exec(b.ctx, "SELECT id FROM orders WHERE id = $1 FOR NO KEY UPDATE", o.ID)
	require.NoError(t, err)
	require.Equal(t, orders.WaitingHeld, finish())
	require.NoError(t, pay.Rollback(b.ctx))
	require.Equal(t, orders.WaitingFree, finish())
	_, err = b.svc.ConfirmCreated(b.ctx, 10)
	require.NoError(t, err)
	require.Equal(t, orders.WaitingNone, finish())
}

// TestStockMovesPendingThenFolded: a confirmation batch leaves its stock
// moves pending instead of updating the product (schema step 13); reads
// add them, and every writer that needs the true counters folds first: a
// stock take (PUT sets on_hand: without the fold, the pending move would
// later take the confirmed units off the new count) and the cancel of a confirmed
// order (returning sold units: without the fold, sold on the row would go
// below zero and the CHECK would fail it).
func TestStockMovesPendingThenFolded(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	sku := b.sku("FOLD")
	b.product(t, sku, 10, 100)
	o1 := b.order(t, b.buyer(1), sku, 3)
	b.order(t, b.buyer(2), sku, 4)
	n, err := b.svc.ConfirmCreated(b.ctx, 10)
	require.NoError(t, err)
	require.Equal(t, 2, n)

	// Pending, not folded: the row still holds the reservations.
	require.Equal(t, int64(7), b.count(t, "SELECT sold FROM product_stock_pending WHERE sku = $1", sku), "the batch's moves pending, summed per product")
	require.Equal(t, int64(7), b.count(t, "SELECT stock_reserved FROM product WHERE sku = $1", sku))
	require.Equal(t, stock{OnHand: 93, Reserved: 0, Sold: 7}, b.stock(t, sku))
	p, err := b.svc.GetProduct(b.ctx, sku)
	require.NoError(t, err)
	require.Equal(t, []int64{93, 0, 93, 7}, []int64{p.StockOnHand, p.StockReserved, p.StockAvailable, p.Sold})
	b.requireStockMatchesOrders(t, sku, 100)

	// Cancelling a confirmed order returns its units with the move still
	// pending.
	_, err = b.svc.Cancel(b.ctx, o1.ID, "changed my mind")
	require.NoError(t, err)
	require.Equal(t, stock{OnHand: 96, Reserved: 0, Sold: 4}, b.stock(t, sku))
	require.Zero(t, b.count(t, "SELECT count(*) FROM product_stock_pending WHERE sku = $1 AND (on_hand, reserved, sold) <> (0, 0, 0)", sku), "the cancel folded the log")

	// A stock take with a move pending: on_hand is what PUT says, sold
	// stays what confirmed orders took, in the answer and afterwards.
	b.order(t, b.buyer(3), sku, 5)
	_, err = b.svc.ConfirmCreated(b.ctx, 10)
	require.NoError(t, err)
	require.Equal(t, stock{OnHand: 91, Reserved: 0, Sold: 9}, b.stock(t, sku))
	put, _, err := b.svc.PutProduct(b.ctx, orders.ProductInput{SKU: sku, Name: "Product " + sku, PriceMinor: 10, Currency: "CNY", Stock: 50})
	require.NoError(t, err)
	require.Equal(t, []int64{50, 0, 9}, []int64{put.StockOnHand, put.StockReserved, put.Sold})
	require.Equal(t, stock{OnHand: 50, Reserved: 0, Sold: 9}, b.stock(t, sku))
	b.requireStockMatchesOrders(t, sku, 59)

	// Expiry of a confirmed, unpaid order (orders_move_stock_by_sku) with
	// its move pending returns its units too (a product whose row has sold
	// nothing yet: without the fold, sold would go below zero).
	sku2 := b.sku("FOLD2")
	b.product(t, sku2, 10, 100)
	o5 := b.order(t, b.buyer(5), sku2, 6)
	_, err = b.svc.ConfirmCreated(b.ctx, 10)
	require.NoError(t, err)
	_, err = b.pool.Exec(b.ctx, "UPDATE orders SET expires_at = now() - interval '1 second' WHERE id = $1", o5.ID)
	require.NoError(t, err)
	n, err = b.svc.ExpireDue(b.ctx, 10)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, stock{OnHand: 100, Reserved: 0, Sold: 0}, b.stock(t, sku2))
	b.requireStockMatchesOrders(t, sku2, 100)

	// The background fold skips a product another transaction holds (it
	// never waits for a creator) and takes it the next time.
	b.order(t, b.buyer(4), sku, 2)
	_, err = b.svc.ConfirmCreated(b.ctx, 10)
	require.NoError(t, err)
	holder, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	defer holder.Rollback(b.ctx) //nolint:errcheck // released below
	_, err = holder.Exec(b.ctx, "SELECT 1 FROM product WHERE sku = $1 FOR NO KEY UPDATE", sku)
	require.NoError(t, err)
	folded, err := b.svc.FoldStockMoves(b.ctx, true)
	require.NoError(t, err)
	require.Zero(t, folded)
	require.Equal(t, int64(1), b.count(t, "SELECT count(*) FROM product_stock_pending WHERE sku = $1 AND (on_hand, reserved, sold) <> (0, 0, 0)", sku))
	require.Equal(t, stock{OnHand: 48, Reserved: 0, Sold: 11}, b.stock(t, sku))

	// A waiting fold (the sweep's, every tenth of the confirmer's) waits
	// for the holder, then empties the log; the row then holds the true
	// counters.
	waited := make(chan int, 1)
	go func() {
		n, err := b.svc.FoldStockMoves(b.ctx, false)
		assert.NoError(t, err)
		waited <- n
	}()
	select {
	case <-waited:
		t.Fatal("a waiting fold did not wait for the product's holder")
	case <-time.After(200 * time.Millisecond):
	}
	require.NoError(t, holder.Rollback(b.ctx))
	require.Equal(t, 1, <-waited)
	require.Zero(t, b.count(t, "SELECT count(*) FROM product_stock_pending WHERE (on_hand, reserved, sold) <> (0, 0, 0)"))
	require.Equal(t, int64(11), b.count(t, "SELECT sold FROM product WHERE sku = $1", sku))
	require.Equal(t, stock{OnHand: 48, Reserved: 0, Sold: 11}, b.stock(t, sku))
	b.requireStockMatchesOrders(t, sku, 59)
}

// TestPutProductWaitsForConfirmationBatch: a confirmation batch adds its
// moves without locking the product, so PUT takes the confirmer's lock
// before it folds: a batch that commits between PUT's fold and its upsert
// would otherwise be in neither, and the stock take would lose the units
// the batch confirmed (without the lock PUT does not wait, and on hand
// would end at 45).
func TestPutProductWaitsForConfirmationBatch(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	sku := b.sku("PUTB")
	b.product(t, sku, 10, 100)
	b.order(t, b.buyer(1), sku, 5)

	// A batch in flight: the confirmer's lock, the orders confirmed and
	// the move added, not committed yet.
	batch, err := b.pool.Begin(b.ctx)
	require.NoError(t, err)
	defer batch.Rollback(context.WithoutCancel(b.ctx)) //nolint:errcheck
	q := db.New(batch)
	require.NoError(t, q.LockOrderConfirmer(b.ctx))
	r, err := q.ConfirmCreatedOrders(b.ctx, db.ConfirmCreatedOrdersParams{Lim: 10, Actor: orders.ActorConfirm})
	require.NoError(t, err)
	require.EqualValues(t, 1, r.OrdersConfirmed)

	type result struct {
		p   *orders.Product
		err error
	}
	put := make(chan result, 1)
	go func() {
		p, _, err := b.svc.PutProduct(b.ctx, orders.ProductInput{SKU: sku, Name: "Product " + sku, PriceMinor: 10, Currency: "CNY", Stock: 50})
		put <- result{p, err}
	}()
	select {
	case res := <-put:
		t.Fatalf("PUT finished while a confirmation batch was in flight: %+v, %v", res.p, res.err)
	case <-time.After(300 * time.Millisecond):
	}
	require.NoError(t, batch.Commit(b.ctx))
	res := <-put
	require.NoError(t, res.err)
	// The stock take came after the confirmation: 50 on hand, 5 sold.
	require.Equal(t, []int64{50, 0, 5}, []int64{res.p.StockOnHand, res.p.StockReserved, res.p.Sold})
	require.Equal(t, stock{OnHand: 50, Reserved: 0, Sold: 5}, b.stock(t, sku))
	b.requireStockMatchesOrders(t, sku, 55)
}
