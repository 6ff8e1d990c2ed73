package orders

import (
	"context"
	"fmt"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/ledger"
)

// PayInput is POST /v1/orders/{id}/pay.
type PayInput struct {
	// PaymentID identifies the payment; repeating it is idempotent.
	PaymentID string
	// AmountMinor must equal the order total.
	AmountMinor int64
}

// PaymentEntryKey is the ledger idempotency key of a payment's journal
// entry.
func PaymentEntryKey(paymentID string) string {
	return ledger.SystemKeyPrefix + "order-payment:" + paymentID
}

// Pay records a payment (SPEC §3). From CREATED the order is confirmed inline
// (its reservation becomes sold) and then paid, in one transaction; from
// CONFIRMED it is paid. The same transaction writes the journal entry
// (debit platform:cash, credit merchant:{merchant_id}:payable, urgent so it
// is applied at once) through ledger.PostTx, the path every ledger writer
// uses.
//
// Idempotency is checked first: a repeat with the payment_id the order was
// paid with returns the order unchanged (paid=false), whatever its state
// now, or idempotency_conflict when its amount differs; another payment of
// a paid order is invalid_transition, and a payment_id that already paid
// another order is idempotency_conflict. Only then must the amount equal
// the order total (else 422 unprocessable).
func (s *Service) Pay(ctx context.Context, id int64, in PayInput) (*Order, bool, error) {
	if err := text("payment_id", in.PaymentID, MaxPaymentLen); err != nil {
		return nil, false, err
	}
	var paid bool
	o, err := db.InTxV(ctx, s.store, func(tx *db.Tx) (*Order, error) {
		o, err := lockOrder(ctx, tx, id)
		if err != nil {
			return nil, err
		}
		// Idempotency first (SPEC §2): a repeat of this order's payment_id
		// returns the order, or is a conflict when its amount differs.
		if o.PaymentID != nil && *o.PaymentID == in.PaymentID {
			if in.AmountMinor != o.TotalMinor {
				return nil, riverbank.Errorf(riverbank.EIDEMPOTENCYCONFLICT, "payment_id %q paid order %d with amount_minor %d, not %d", in.PaymentID, o.ID, o.TotalMinor, in.AmountMinor).
					WithDetail("order_id", o.ID)
			}
			return loadOrder(ctx, tx.Queries, o)
		}
		if o.PaymentID != nil {
			return nil, riverbank.Errorf(riverbank.EINVALIDTRANSITION, "order %d was already paid with another payment_id", o.ID).
				WithDetail("order_id", o.ID).WithDetail("status", string(o.Status)).WithDetail("to", string(StatusPaid))
		}
		other, err := tx.OrderIDByPaymentID(ctx, &in.PaymentID)
		switch {
		case err == nil:
			return nil, riverbank.Errorf(riverbank.EIDEMPOTENCYCONFLICT, "payment_id %q already paid order %d", in.PaymentID, other).WithDetail("order_id", other)
		case !db.IsNotFound(err):
			return nil, fmt.Errorf("find order by payment: %w", err)
		}
		if in.AmountMinor != o.TotalMinor {
			return nil, riverbank.Errorf(riverbank.EUNPROCESSABLE, "amount_minor %d does not equal the order total %d %s", in.AmountMinor, o.TotalMinor, o.Currency).
				WithDetail("amount_minor", in.AmountMinor).WithDetail("total_minor", o.TotalMinor)
		}
		if Status(o.Status) == StatusCreated {
			detail := "confirmed inline by payment " + in.PaymentID
			if o, err = lockedTransitionTx(ctx, tx, o, StatusConfirmed, facts{actor: ActorAPI, detail: &detail}); err != nil {
				return nil, err
			}
		}
		if !CanTransition(Status(o.Status), StatusPaid) {
			return nil, invalidTransition(o, StatusPaid)
		}
		entry, _, err := ledger.PostTx(ctx, tx, ledger.EntryInput{
			IdempotencyKey: PaymentEntryKey(in.PaymentID),
			Description:    fmt.Sprintf("payment %s of order %d", in.PaymentID, o.ID),
			Urgent:         true,
			Postings: []ledger.PostingInput{
				{Account: ledger.AccountPlatformCash, AmountMinor: o.TotalMinor},
				{Account: ledger.MerchantPayable(o.MerchantID), AmountMinor: -o.TotalMinor},
			},
			CreateSystemAccounts: true,
			Currency:             o.Currency,
		})
		if err != nil {
			return nil, fmt.Errorf("post payment entry: %w", err)
		}
		o, err = lockedTransitionTx(ctx, tx, o, StatusPaid, facts{actor: ActorAPI, detail: &in.PaymentID, paymentID: &in.PaymentID, ledgerEntryID: &entry.ID})
		if db.IsUniqueViolation(err, "orders_payment_id_key") {
			// A concurrent payment of another order with this id won.
			return nil, riverbank.Errorf(riverbank.EIDEMPOTENCYCONFLICT, "payment_id %q already paid another order", in.PaymentID)
		}
		if err != nil {
			return nil, err
		}
		paid = true
		return loadOrder(ctx, tx.Queries, o)
	})
	if err != nil {
		return nil, false, err
	}
	return o, paid, nil
}

// apiTransition locks order id and moves it to status to on behalf of the
// API, returning the order as it is afterwards.
func (s *Service) apiTransition(ctx context.Context, id int64, to Status, f facts) (*Order, error) {
	return db.InTxV(ctx, s.store, func(tx *db.Tx) (*Order, error) {
		o, err := lockOrder(ctx, tx, id)
		if err != nil {
			return nil, err
		}
		if o, err = lockedTransitionTx(ctx, tx, o, to, f); err != nil {
			return nil, err
		}
		return loadOrder(ctx, tx.Queries, o)
	})
}

// Ship moves a PAID order to SHIPPED with its tracking number.
func (s *Service) Ship(ctx context.Context, id int64, trackingNo string) (*Order, error) {
	if err := text("tracking_no", trackingNo, MaxTrackingLen); err != nil {
		return nil, err
	}
	return s.apiTransition(ctx, id, StatusShipped, facts{actor: ActorAPI, detail: &trackingNo, trackingNo: &trackingNo})
}

// Receive moves a SHIPPED order to COMPLETED (the buyer received it).
func (s *Service) Receive(ctx context.Context, id int64) (*Order, error) {
	return s.apiTransition(ctx, id, StatusCompleted, facts{actor: ActorAPI})
}

// Cancel cancels an unpaid (CREATED or CONFIRMED) order and releases its
// stock: the reservation of a CREATED order, the sold units of a CONFIRMED
// one.
func (s *Service) Cancel(ctx context.Context, id int64, reason string) (*Order, error) {
	if err := text("reason", reason, MaxReasonLen); err != nil {
		return nil, err
	}
	return s.apiTransition(ctx, id, StatusCancelled, facts{actor: ActorAPI, detail: &reason, cancelReason: &reason})
}

// jobTransition is how order.confirm and order.expire move an order: one
// ApplyTransition statement on its own (an implicit transaction, committed
// synchronously like every other write). wanted picks the target
// from the current status, or "" to do nothing. The transition is guarded
// by the status it starts from: first the guess (CREATED for confirm,
// CONFIRMED for expiry: usually right, and then no read is needed), then
// a status read without locks — a status a job does not act on never comes
// back, so a no-op run writes nothing. If a concurrent transition wins in
// between, it reads the status again.
func (s *Service) jobTransition(ctx context.Context, id int64, guess Status, wanted func(Status) Status, f facts) (bool, error) {
	q := s.store.Queries()
	for range 3 {
		from := guess
		guess = ""
		if from == "" {
			st, err := q.OrderStatus(ctx, id)
			if db.IsNotFound(err) {
				return false, notFound(id)
			}
			if err != nil {
				return false, fmt.Errorf("read order status: %w", err)
			}
			from = Status(st)
		}
		to := wanted(from)
		if to == "" {
			return false, nil
		}
		// The transition and its event commit together.
		next, err := db.InTxV(ctx, s.store, func(tx *db.Tx) (*db.Order, error) {
			return applyTransition(ctx, tx, &db.Order{ID: id, Status: db.OrderStatus(from)}, to, f)
		})
		if err != nil {
			return false, err
		}
		if next != nil {
			return true, nil
		}
	}
	return false, fmt.Errorf("order %d kept changing under job %s", id, f.actor)
}

// Waiting reports whether an order still waits for its confirmation
// (CREATED), by an unlocked read: a status past CREATED never comes back.
func (s *Service) Waiting(ctx context.Context, id int64) (bool, error) {
	st, err := s.store.Queries().OrderStatus(ctx, id)
	if db.IsNotFound(err) {
		return false, notFound(id)
	}
	if err != nil {
		return false, fmt.Errorf("read order status: %w", err)
	}
	return Status(st) == StatusCreated, nil
}

// Confirm is the order.confirm job: if the order is still CREATED, its
// reservation becomes sold and it is CONFIRMED; otherwise (paid inline,
// cancelled, expired) it does nothing. It reports whether it confirmed.
// Idempotent, so River may run it any number of times.
//
// Confirm and Expire are job entry points: their statement is a
// transaction of its own on the store's pool (see jobTransition).
func (s *Service) Confirm(ctx context.Context, id int64) (bool, error) {
	return s.jobTransition(ctx, id, StatusCreated, func(st Status) Status {
		if st == StatusCreated {
			return StatusConfirmed
		}
		return ""
	}, facts{actor: ActorConfirm})
}

// Expire is the order.expire job: an order still unpaid (CREATED or
// CONFIRMED) is CANCELLED with reason payment_timeout and its stock
// released; any other order is left alone. It reports whether it cancelled.
// The transition is guarded by the status it read, so running it twice, or
// racing it with a payment or a cancel, releases stock at most once.
func (s *Service) Expire(ctx context.Context, id int64) (bool, error) {
	reason := ReasonPaymentTimeout
	// By expires_at an order is almost always CONFIRMED (or paid), so that
	// is the guess; a paid order then costs one more cheap read.
	return s.jobTransition(ctx, id, StatusConfirmed, func(st Status) Status {
		if st.Unpaid() {
			return StatusCancelled
		}
		return ""
	}, facts{actor: ActorExpire, detail: &reason, cancelReason: &reason})
}
