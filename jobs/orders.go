package jobs

import (
	"cmp"
	"context"

	"github.com/riverqueue/river"

	"riverbank"
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
	// Batch defaults to orders.ConfirmBatch.
	Batch int
}

// Work implements river.Worker.
func (w *OrderConfirmWorker) Work(ctx context.Context, job *river.Job[orders.ConfirmArgs]) error {
	id := job.Args.OrderID
	waiting, err := w.Orders.Waiting(ctx, id)
	if err != nil || !waiting {
		return orderJobResult(err)
	}
	_, err = w.Orders.ConfirmWaiting(ctx, id, cmp.Or(w.Batch, orders.ConfirmBatch))
	return orderJobResult(err)
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
