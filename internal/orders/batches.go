package orders

import (
	"context"
	"fmt"

	"riverbank/internal/db"
	"riverbank/internal/events"
)

// Batch sizes of the confirmation and expiry statements: how many orders
// one transaction moves at most. A confirmation batch locks no product (it
// keeps its stock moves pending, summed per product; FoldStockMoves
// applies them); an expiry batch holds the row locks of its products only for its last
// statement and the commit (stock moves summed per product and applied
// last), so a large batch costs a hot product one short lock instead of
// one per order.
const (
	ConfirmBatch = 500
	ExpireBatch  = 500
)

// ConfirmCreated confirms up to limit CREATED orders, oldest first, in one
// transaction (ConfirmCreatedOrders): each order's reservation becomes
// sold, its history and feed events are appended, and the stock moves are
// summed per product. Orders another transaction holds (a payment, a
// cancel) are skipped, not waited for; that transaction decides them.
// Batches run one at a time (LockOrderConfirmer). It returns how many it
// confirmed.
func (s *Service) ConfirmCreated(ctx context.Context, limit int) (int, error) {
	return s.confirmBatch(ctx, 0, limit)
}

// ConfirmWaiting sees that order id leaves CREATED, confirming it with
// every other waiting order in batches of up to limit: it waits its turn
// for the confirmer's lock, and then, unless the batch before it confirmed
// the order already, confirms the oldest waiting orders. An order held by
// a payment or a cancel, or beyond the batches, is confirmed alone at the
// end (waiting for that transaction). It reports whether the order was
// still waiting when its turn came.
func (s *Service) ConfirmWaiting(ctx context.Context, id int64, limit int) (bool, error) {
	acted := false
	for range 4 {
		n, err := s.confirmBatch(ctx, id, limit)
		if err != nil {
			return acted, err
		}
		if n < 0 {
			return acted, nil // done before its turn
		}
		acted = true
		if n < limit {
			break
		}
	}
	waiting, err := s.Waiting(ctx, id)
	if err != nil || !waiting {
		return acted, err
	}
	_, err = s.Confirm(ctx, id)
	return true, err
}

// Waiting is what FinishConfirmerTx found still waiting in CREATED.
type Waiting int

const (
	// WaitingNone: no order waits.
	WaitingNone Waiting = iota
	// WaitingHeld: orders wait, every one held by a payment or a cancel
	// whose transaction decides it.
	WaitingHeld
	// WaitingFree: an order waits that a confirmer can take now.
	WaitingFree
)

// FinishConfirmerTx is the lingering confirmer's last step, in the
// transaction that completes its job: it waits for every order that asked
// for a confirmer (LockOrderConfirmRequests), deletes the confirm signal,
// so the next order to be created asks for a new job, and reports what
// still waits (the caller re-enqueues the job, in this transaction). It
// locks no product (only, FOR SHARE, one free waiting order), so it cannot
// deadlock with creators or confirmation batches.
func FinishConfirmerTx(ctx context.Context, tx *db.Tx) (Waiting, error) {
	if err := tx.LockOrderConfirmRequests(ctx); err != nil {
		return WaitingNone, fmt.Errorf("lock confirm requests: %w", err)
	}
	if err := tx.DeleteOrderConfirmSignal(ctx); err != nil {
		return WaitingNone, fmt.Errorf("delete confirm signal: %w", err)
	}
	w, err := tx.CreatedOrdersWaiting(ctx)
	switch {
	case err != nil:
		return WaitingNone, fmt.Errorf("look for waiting orders: %w", err)
	case w.FreeWaiting:
		return WaitingFree, nil
	case w.AnyWaiting:
		return WaitingHeld, nil
	}
	return WaitingNone, nil
}

// confirmBatch runs one batch under the confirmer's lock; with id set, only
// if that order still waits once the lock is held (-1 otherwise).
func (s *Service) confirmBatch(ctx context.Context, id int64, limit int) (int, error) {
	typ := ""
	if events.On() {
		typ = events.OrderConfirmed
	}
	return db.InTxV(ctx, s.store, func(tx *db.Tx) (int, error) {
		if err := tx.LockOrderConfirmer(ctx); err != nil {
			return 0, fmt.Errorf("lock the order confirmer: %w", err)
		}
		if id != 0 {
			// A statement after the lock: it sees every batch committed
			// before this one.
			st, err := tx.OrderStatus(ctx, id)
			if db.IsNotFound(err) {
				return 0, notFound(id)
			}
			if err != nil {
				return 0, fmt.Errorf("read order status: %w", err)
			}
			if Status(st) != StatusCreated {
				return -1, nil
			}
		}
		r, err := tx.ConfirmCreatedOrders(ctx, db.ConfirmCreatedOrdersParams{Lim: int32(limit), Actor: ActorConfirm, EventType: typ})
		if err != nil {
			return 0, batchError("confirm", err)
		}
		if r.ProductsMoved != r.Products {
			return 0, fmt.Errorf("confirm orders: stock moved for %d of %d products", r.ProductsMoved, r.Products)
		}
		if r.OrdersConfirmed > 0 && typ != "" {
			events.Appended(tx)
		}
		return int(r.OrdersConfirmed), nil
	})
}

// FoldStockMoves folds the confirmation stock moves committed by now into
// their product rows (FoldAllStockMoves: one transaction, products locked
// in sku order, their pending counts added and zeroed) and returns how many
// products it updated. With skipLocked it passes over any product another
// transaction holds at this instant (a creator's reservation): it never
// waits, so it never holds products in a convoy behind a busy one, and a
// later fold takes what it skipped; without, it waits for every product
// (a product creators hold almost without a break is folded only so).
// Stock reads are true either way (product_stock).
func (s *Service) FoldStockMoves(ctx context.Context, skipLocked bool) (int, error) {
	n, err := db.InTxV(ctx, s.store, func(tx *db.Tx) (int32, error) {
		return tx.FoldAllStockMoves(ctx, skipLocked)
	})
	if err != nil {
		return 0, batchError("fold stock moves of confirmed", err)
	}
	return int(n), nil
}

// ExpireDue cancels up to limit unpaid orders whose expires_at has passed,
// earliest deadline first, in one transaction (ExpireDueOrders), with
// reason payment_timeout: a CREATED order's reservation is released, a
// CONFIRMED order's sold units go back on hand, summed per product. An
// order being paid or cancelled right now is skipped; its transaction
// decides it, and if it stays unpaid the next sweep takes it. It returns
// how many it cancelled.
func (s *Service) ExpireDue(ctx context.Context, limit int) (int, error) {
	typ := ""
	if events.On() {
		typ = events.OrderCancelled
	}
	return db.InTxV(ctx, s.store, func(tx *db.Tx) (int, error) {
		r, err := tx.ExpireDueOrders(ctx, db.ExpireDueOrdersParams{Lim: int32(limit), Reason: ReasonPaymentTimeout, Actor: ActorExpire, EventType: typ})
		if err != nil {
			return 0, batchError("expire", err)
		}
		if r.ProductsMoved != r.Products {
			return 0, fmt.Errorf("expire orders: stock moved for %d of %d products", r.ProductsMoved, r.Products)
		}
		if r.OrdersExpired > 0 && typ != "" {
			events.Appended(tx)
		}
		return int(r.OrdersExpired), nil
	})
}

func batchError(what string, err error) error {
	if c, ok := db.ConstraintViolation(err); ok {
		// A CHECK fired: the stock counters disagree with the orders.
		// Never paper over it.
		return fmt.Errorf("%s orders: constraint %q violated: %w", what, c, err)
	}
	return fmt.Errorf("%s orders: %w", what, err)
}
