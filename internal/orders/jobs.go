package orders

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"riverbank/internal/db"
	"riverbank/internal/queue"
)

// Job kinds. KindConfirm also appears in queries/orders.sql (the sweeper's
// probe of river_job).
const (
	KindConfirm = "order.confirm"
	KindExpire  = "order.expire"
	KindSweep   = "order.sweep"
)

// liveStates are the states in which a job will still run. River requires
// pending, scheduled, available and running in every unique state set.
var liveStates = []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRetryable,
	rivertype.JobStateRunning, rivertype.JobStateScheduled,
}

// ConfirmArgs are the args of order.confirm. OrderID 0 is the lingering
// confirmer a created order asks for (see orders_request_confirm): it
// confirms every waiting order in batches while orders keep coming. A
// non-zero OrderID (the sweep's re-enqueue, or a job of an earlier version)
// sees that one order leaves CREATED.
type ConfirmArgs struct {
	OrderID int64 `json:"order_id"`
}

// Kind implements river.JobArgs.
func (ConfirmArgs) Kind() string { return KindConfirm }

// InsertOpts implements river.JobArgsWithInsertOpts. Unique per order while
// the job is live: a re-insert (the sweeper's) is a no-op then, but one
// whose job was discarded or cancelled gets a new job.
func (ConfirmArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		MaxAttempts: 25,
		UniqueOpts:  river.UniqueOpts{ByArgs: true, ByState: liveStates},
	}
}

// ExpireArgs are the args of order.expire, the expiry sweep: cancel every
// unpaid order whose expires_at has passed (ExpireDue, in batches). The
// River leader inserts it every ExpireInterval. Jobs of earlier versions
// carried an order_id (one job per order, scheduled at its expires_at);
// such a job, still queued after an upgrade, runs the same sweep.
type ExpireArgs struct{}

// Kind implements river.JobArgs.
func (ExpireArgs) Kind() string { return KindExpire }

// ExpireInterval is how often the leader inserts the expiry sweep: an
// unpaid order is cancelled at most about this long (plus the sweep's own
// time) after its expires_at.
const ExpireInterval = 2 * time.Second

// InsertOpts implements river.JobArgsWithInsertOpts. One live sweep at a
// time (a sweep still running when the next tick comes makes that tick a
// no-op); a sweep waiting to retry does not block the next one, which
// would do the same work. Priority 2 (River fetches priority 1 first): a
// large wave of expiries must not hold up the confirmations queued on the
// same queue.
func (ExpireArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Priority:    2,
		MaxAttempts: 3,
		UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: []rivertype.JobState{
			rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRunning, rivertype.JobStateScheduled,
		}},
	}
}

// SweepArgs are the args of the periodic order.sweep job.
type SweepArgs struct{}

// Kind implements river.JobArgs.
func (SweepArgs) Kind() string { return KindSweep }

// InsertOpts implements river.JobArgsWithInsertOpts: the maintenance queue,
// and never two live sweeps.
func (SweepArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:       queue.Maintenance,
		MaxAttempts: 3,
		UniqueOpts:  river.UniqueOpts{ByArgs: true, ByState: liveStates},
	}
}

// Sweep settings: an order is stale when it has waited in CREATED this long
// without a live order.confirm job; one sweep re-enqueues at most
// SweepBatch of them (the next sweep takes the rest).
const (
	StaleAfter = time.Minute
	SweepBatch = 1000
	// StaleCountCap bounds the stale-orders gauge's count query.
	StaleCountCap = 100_000
)

// Sweep is the safety net of order confirmation (the job seed 004 needed
// XXL-JOB for): it finds orders waiting in CREATED for longer than
// StaleAfter with no live order.confirm job — reading the partial index of
// CREATED orders, never the whole table — and inserts order.confirm for
// each (unique, so a job that went live meanwhile is not doubled). It
// returns how many it re-enqueued.
//
// It also repairs the lingering confirmer: while the confirm signal exists,
// new orders insert no job, so a confirmer that stopped being live without
// its final transaction (cancelled in the River UI, discarded after its
// attempts, or cancelled by a worker of an earlier version during a
// rolling upgrade) would leave every later order to this sweep. When the
// signal exists it inserts order.confirm (order_id 0), unique: a no-op
// while one is live.
//
// Last, it folds the confirmations' stock moves left pending (by a
// confirmer that crashed, or by an order.confirm with an order id, which
// does not fold), waiting for each product's lock (FoldStockMoves).
func (s *Service) Sweep(ctx context.Context) (int, error) {
	n, err := s.sweep(ctx)
	if err != nil {
		return n, err
	}
	if _, err := s.FoldStockMoves(ctx, false); err != nil {
		return n, err
	}
	return n, nil
}

func (s *Service) sweep(ctx context.Context) (int, error) {
	signal, err := s.store.Queries().OrderConfirmSignalExists(ctx)
	if err != nil {
		return 0, fmt.Errorf("look for the confirm signal: %w", err)
	}
	if signal {
		var res *rivertype.JobInsertResult
		err := s.store.InTx(ctx, func(tx *db.Tx) error {
			var err error
			res, err = tx.Insert(ctx, ConfirmArgs{}, nil)
			return err
		})
		if err != nil {
			return 0, fmt.Errorf("ensure the order confirmer: %w", err)
		}
		if !res.UniqueSkippedAsDuplicate {
			s.logger.WarnContext(ctx, "the order confirm signal was set without a live confirmer; enqueued order.confirm", "job_id", res.Job.ID)
		}
	}
	ids, err := s.store.Queries().StaleCreatedOrders(ctx, db.StaleCreatedOrdersParams{OlderThanUs: StaleAfter.Microseconds(), Lim: SweepBatch})
	if err != nil {
		return 0, fmt.Errorf("find stale orders: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	params := make([]river.InsertManyParams, len(ids))
	for i, id := range ids {
		params[i] = river.InsertManyParams{Args: ConfirmArgs{OrderID: id}}
	}
	err = s.store.InTx(ctx, func(tx *db.Tx) error {
		_, err := tx.InsertMany(ctx, params)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("re-enqueue confirmations: %w", err)
	}
	s.logger.WarnContext(ctx, "orders waiting in CREATED without a live confirm job; re-enqueued order.confirm", "count", len(ids), "first_order_id", ids[0])
	return len(ids), nil
}

// StaleCount counts (up to StaleCountCap) the orders Sweep would re-enqueue
// now: the value of the riverbank_orders_stale_created gauge.
func StaleCount(ctx context.Context, q *db.Queries) (int64, error) {
	n, err := q.CountStaleCreatedOrders(ctx, db.CountStaleCreatedOrdersParams{OlderThanUs: StaleAfter.Microseconds(), Cap: StaleCountCap})
	if err != nil {
		return 0, fmt.Errorf("count stale orders: %w", err)
	}
	return n, nil
}
