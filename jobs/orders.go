package jobs

import (
	"cmp"
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/orders"
)

// OrderConfirmWorker works order.confirm: it sees that its order leaves
// CREATED (its reservation becomes sold) and does nothing when it already
// has. Each job is one order's, as inserted with the order, but a job
// whose order still waits confirms every waiting order in batches
// (orders.ConfirmWaiting: one batch at a time, the oldest orders first,
// summed stock moves, one commit per batch), so under load one job
// confirms what many were inserted for and the others find their order
// done. Every step is idempotent, so the job completes outside the
// transactions: a crash in between runs it again.
type OrderConfirmWorker struct {
	river.WorkerDefaults[orders.ConfirmArgs]
	Orders *orders.Service
	Store  *db.Store
	// Batch defaults to orders.ConfirmBatch.
	Batch int
	// Budget bounds one lingering confirmer's run; then it hands over to a
	// fresh job. Default 20s.
	Budget time.Duration
	// Linger is the lingering confirmer's pause between batches while
	// orders keep coming. Default 5ms (measured, 16 clients: 20 ms gave a
	// create→CONFIRMED p99 of 237-349 ms at half load, 5 ms 85 ms, at the
	// same orders/s).
	Linger time.Duration
	// Logger gets the failures of the background stock folds; nil:
	// slog.Default().
	Logger *slog.Logger
}

// NextRetry implements river.Worker: a failed confirmer is retried within
// seconds (attempt × 1 s, at most 10 s), not on River's polynomial backoff:
// while its confirm signal stands, no new order inserts another.
func (w *OrderConfirmWorker) NextRetry(job *river.Job[orders.ConfirmArgs]) time.Time {
	return time.Now().Add(min(time.Duration(job.Attempt)*time.Second, 10*time.Second))
}

// Work implements river.Worker.
func (w *OrderConfirmWorker) Work(ctx context.Context, job *river.Job[orders.ConfirmArgs]) error {
	if job.Args.OrderID == 0 {
		return w.linger(ctx, job)
	}
	id := job.Args.OrderID
	waiting, err := w.Orders.Waiting(ctx, id)
	if err != nil || !waiting {
		return orderJobResult(err)
	}
	_, err = w.Orders.ConfirmWaiting(ctx, id, cmp.Or(w.Batch, orders.ConfirmBatch))
	return orderJobResult(err)
}

// idleRounds is how many empty batches in a row (one Linger apart) end a
// lingering confirmer: a short lull keeps the job (and its worker) rather
// than paying a job's insert, fetch and completion for the next order.
const idleRounds = 5

// foldEvery is how often a lingering confirmer folds the stock moves its
// batches leave pending into the product rows (orders.FoldStockMoves):
// each fold locks the products it updates through its commit, as every
// confirmation batch did before, so once a second instead of every few
// milliseconds.
const foldEvery = time.Second

// waitingFoldEvery: every so many background folds, one waits for the
// products creators hold instead of skipping them (foldWhileLingering).
const waitingFoldEvery = 10

// linger is the lingering confirmer (order_id 0), the job a created order
// asks for when no confirmer is due (orders_request_confirm in schema.sql):
// it confirms waiting orders in batches (orders.ConfirmCreated), pausing
// Linger between batches while orders keep coming (and through a lull of
// idleRounds empty batches), up to Budget; then its
// final transaction (orders.FinishConfirmerTx) waits for every order that
// asked for it, deletes the confirm signal, completes the job and, if
// orders still wait, enqueues the next confirmer, all atomically. A crash
// leaves the job running; River's rescuer retries it, and the signal,
// still there, keeps creators from inserting a second one.
func (w *OrderConfirmWorker) linger(ctx context.Context, job *river.Job[orders.ConfirmArgs]) error {
	batch := cmp.Or(w.Batch, orders.ConfirmBatch)
	deadline := time.Now().Add(cmp.Or(w.Budget, 20*time.Second))
	pause := cmp.Or(w.Linger, 5*time.Millisecond)
	idle := 0 // batches in a row that found nothing to confirm
	stopFolding := w.foldWhileLingering(ctx)
	defer stopFolding()
	for time.Now().Before(deadline) {
		n, err := w.Orders.ConfirmCreated(ctx, batch)
		if err != nil {
			return err
		}
		if n == batch {
			continue
		}
		if n == 0 {
			idle++
		} else {
			idle = 0
		}
		if idle >= idleRounds {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
	stopFolding()
	// A last fold, in its own transaction before the final one: that one
	// waits for every creator that asked for this confirmer, and those hold
	// their product rows until they commit, so a fold inside it could wait
	// for a creator that waits for it. Skipping busy products; a failure
	// is logged, not returned: the confirmations stand, reads are true
	// unfolded, and the next fold (or order.sweep) takes the moves.
	if _, err := w.Orders.FoldStockMoves(ctx, true); err != nil && ctx.Err() == nil {
		w.logger().WarnContext(ctx, "fold stock moves", "error", err)
	}
	return w.Store.InTx(ctx, func(tx *db.Tx) error {
		waiting, err := orders.FinishConfirmerTx(ctx, tx)
		if err != nil {
			return err
		}
		if _, err := river.JobCompleteTx[*riverpgxv5.Driver](ctx, tx.Tx, job); err != nil {
			return err
		}
		switch waiting {
		case orders.WaitingFree:
			_, err = tx.Insert(ctx, orders.ConfirmArgs{}, nil)
		case orders.WaitingHeld:
			// Every waiting order is held by a payment or a cancel, whose
			// transaction decides it: the next confirmer comes a second
			// later (for any that stays CREATED) rather than spinning.
			_, err = tx.Insert(ctx, orders.ConfirmArgs{}, &river.InsertOpts{ScheduledAt: time.Now().Add(time.Second)})
		}
		return err
	})
}

// foldWhileLingering folds the stock moves the confirmer's batches leave
// pending every foldEvery, on a connection of its own beside the batches
// (a batch locks no product and a fold no order, so neither waits for the
// other; a fold inline delayed the confirmations behind it, once a
// second). Folds skip products a creator holds at that instant, except
// every waitingFoldEvery-th, which waits for them, so a product creators
// hold almost without a break (a flash sale's) is folded too. A failed fold is
// logged and the next one tries again (the confirmations stand, reads are
// true unfolded). The returned func stops it and waits for a fold under
// way to finish (it is not cancelled: cancelling a query makes pgx drop
// its connection); calling it again does nothing.
func (w *OrderConfirmWorker) foldWhileLingering(ctx context.Context) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(foldEvery)
		defer t.Stop()
		for n := 1; ; n++ {
			select {
			case <-ctx.Done():
				return
			case <-stop:
				return
			case <-t.C:
				_, err := w.Orders.FoldStockMoves(ctx, n%waitingFoldEvery != 0)
				if err != nil && ctx.Err() == nil {
					w.logger().WarnContext(ctx, "fold stock moves", "error", err)
				}
			}
		}
	}()
	return sync.OnceFunc(func() {
		close(stop)
		<-done
	})
}

func (w *OrderConfirmWorker) logger() *slog.Logger {
	if w.Logger != nil {
		return w.Logger
	}
	return slog.Default()
}

// OrderExpireWorker works order.expire, the expiry sweep the leader inserts
// every orders.ExpireInterval: every unpaid order past its expires_at is
// cancelled with reason payment_timeout and its stock released, in batches
// (orders.ExpireDue), until none is due.
type OrderExpireWorker struct {
	river.WorkerDefaults[orders.ExpireArgs]
	Orders *orders.Service
	// Batch defaults to orders.ExpireBatch.
	Batch int
}

// Work implements river.Worker.
func (w *OrderExpireWorker) Work(ctx context.Context, _ *river.Job[orders.ExpireArgs]) error {
	batch := cmp.Or(w.Batch, orders.ExpireBatch)
	for {
		n, err := w.Orders.ExpireDue(ctx, batch)
		if err != nil || n < batch {
			return err
		}
	}
}

// OrderSweepWorker works the periodic order.sweep: it re-enqueues
// order.confirm for orders left in CREATED for over a minute without a live
// confirm job. The riverbank_orders_stale_created gauge (internal/metrics)
// counts the same orders at scrape time.
type OrderSweepWorker struct {
	river.WorkerDefaults[orders.SweepArgs]
	Orders *orders.Service
}

// Work implements river.Worker.
func (w *OrderSweepWorker) Work(ctx context.Context, _ *river.Job[orders.SweepArgs]) error {
	_, err := w.Orders.Sweep(ctx)
	return err
}

// orderJobResult turns a missing order into a cancelled job (retrying
// cannot make it appear); other errors are retried by River.
func orderJobResult(err error) error {
	if riverbank.ErrorCode(err) == riverbank.ENOTFOUND {
		return river.JobCancel(err)
	}
	return err
}
