package jobs

import (
	"context"

	"github.com/riverqueue/river"

	"riverbank"
	"riverbank/internal/orders"
)

// OrderConfirmWorker works order.confirm: it confirms the order if it is
// still CREATED (its reservation becomes sold) and does nothing otherwise.
// The domain call is idempotent, so the job completes outside the
// transaction: a crash between the two just runs a no-op again.
type OrderConfirmWorker struct {
	river.WorkerDefaults[orders.ConfirmArgs]
	Orders *orders.Service
}

// Work implements river.Worker.
func (w *OrderConfirmWorker) Work(ctx context.Context, job *river.Job[orders.ConfirmArgs]) error {
	_, err := w.Orders.Confirm(ctx, job.Args.OrderID)
	return orderJobResult(err)
}

// OrderExpireWorker works order.expire, scheduled at the order's
// expires_at: an order still unpaid is cancelled with reason
// payment_timeout and its stock released; a paid or cancelled one is left
// alone.
type OrderExpireWorker struct {
	river.WorkerDefaults[orders.ExpireArgs]
	Orders *orders.Service
}

// Work implements river.Worker.
func (w *OrderExpireWorker) Work(ctx context.Context, job *river.Job[orders.ExpireArgs]) error {
	_, err := w.Orders.Expire(ctx, job.Args.OrderID)
	return orderJobResult(err)
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
