package orders_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/ledger"
	"riverbank/internal/orders"
)

func TestStateMachineTable(t *testing.T) {
	t.Parallel()
	allowed := map[[2]orders.Status]bool{
		{orders.StatusCreated, orders.StatusConfirmed}:   true,
		{orders.StatusConfirmed, orders.StatusPaid}:      true,
		{orders.StatusPaid, orders.StatusShipped}:        true,
		{orders.StatusShipped, orders.StatusCompleted}:   true,
		{orders.StatusCreated, orders.StatusCancelled}:   true,
		{orders.StatusConfirmed, orders.StatusCancelled}: true,
	}
	for _, from := range orders.Statuses {
		for _, to := range orders.Statuses {
			require.Equal(t, allowed[[2]orders.Status{from, to}], orders.CanTransition(from, to), "%s → %s", from, to)
		}
	}
	require.False(t, orders.CanTransition("BOGUS", orders.StatusPaid))
	for _, s := range orders.Statuses {
		require.True(t, s.Valid())
		require.Equal(t, s == orders.StatusCreated || s == orders.StatusConfirmed, s.Unpaid())
	}
	require.False(t, orders.Status("created").Valid())
}

// TestEveryPathFollowsTheTable drives an order into each status and tries
// every action from there: the API actions succeed exactly when the table
// allows them (pay also from CREATED, by confirming inline) and are
// invalid_transition otherwise, writing nothing; the jobs act only on the
// statuses they are for and are no-ops elsewhere.
func TestEveryPathFollowsTheTable(t *testing.T) {
	t.Parallel()

	type action struct {
		name   string
		target orders.Status
		run    func(b *testBundle, o *orders.Order) (changed bool, err error)
	}
	actions := []action{
		{"pay", orders.StatusPaid, func(b *testBundle, o *orders.Order) (bool, error) {
			_, paid, err := b.svc.Pay(b.ctx, o.ID, orders.PayInput{PaymentID: "p-" + b.suffix + fmt.Sprint(o.ID), AmountMinor: o.TotalMinor})
			return paid, err
		}},
		{"ship", orders.StatusShipped, func(b *testBundle, o *orders.Order) (bool, error) {
			_, err := b.svc.Ship(b.ctx, o.ID, "T-1")
			return err == nil, err
		}},
		{"receive", orders.StatusCompleted, func(b *testBundle, o *orders.Order) (bool, error) {
			_, err := b.svc.Receive(b.ctx, o.ID)
			return err == nil, err
		}},
		{"cancel", orders.StatusCancelled, func(b *testBundle, o *orders.Order) (bool, error) {
			_, err := b.svc.Cancel(b.ctx, o.ID, "buyer asked")
			return err == nil, err
		}},
		{"confirm-job", orders.StatusConfirmed, func(b *testBundle, o *orders.Order) (bool, error) {
			return b.svc.Confirm(b.ctx, o.ID)
		}},
		{"expire-job", orders.StatusCancelled, func(b *testBundle, o *orders.Order) (bool, error) {
			return b.svc.Expire(b.ctx, o.ID)
		}},
	}
	// reach drives a fresh order into status s.
	reach := func(t *testing.T, b *testBundle, sku string, s orders.Status) *orders.Order {
		o := b.order(t, b.buyer(1), sku, 1)
		var err error
		switch s {
		case orders.StatusConfirmed:
			_, err = b.svc.Confirm(b.ctx, o.ID)
		case orders.StatusPaid, orders.StatusShipped, orders.StatusCompleted:
			_, _, err = b.svc.Pay(b.ctx, o.ID, orders.PayInput{PaymentID: "setup-" + b.suffix + fmt.Sprint(o.ID), AmountMinor: o.TotalMinor})
			if err == nil && s != orders.StatusPaid {
				_, err = b.svc.Ship(b.ctx, o.ID, "T-0")
			}
			if err == nil && s == orders.StatusCompleted {
				_, err = b.svc.Receive(b.ctx, o.ID)
			}
		case orders.StatusCancelled:
			_, err = b.svc.Cancel(b.ctx, o.ID, "setup")
		}
		require.NoError(t, err)
		require.Equal(t, s, b.status(t, o.ID))
		return o
	}

	for _, from := range orders.Statuses {
		for _, a := range actions {
			t.Run(fmt.Sprintf("%s/%s", from, a.name), func(t *testing.T) {
				t.Parallel()
				b := setup(t)
				sku := b.sku("SM")
				b.product(t, sku, 500, 10)
				o := reach(t, b, sku, from)
				eventsBefore := b.count(t, "SELECT count(*) FROM order_event WHERE order_id = $1", o.ID)
				stockBefore := b.stock(t, sku)

				changed, err := a.run(b, o)

				isJob := a.name == "confirm-job" || a.name == "expire-job"
				want := orders.CanTransition(from, a.target)
				if a.name == "pay" && from == orders.StatusCreated {
					want = true // confirmed inline, then paid
				}
				if a.name == "expire-job" {
					want = from.Unpaid()
				}
				switch {
				case want:
					require.NoError(t, err)
					require.True(t, changed)
					require.Equal(t, a.target, b.status(t, o.ID))
					require.Greater(t, b.count(t, "SELECT count(*) FROM order_event WHERE order_id = $1", o.ID), eventsBefore)
				case isJob:
					require.NoError(t, err, "jobs are no-ops when the order has moved on")
					require.False(t, changed)
				default:
					requireCode(t, err, riverbank.EINVALIDTRANSITION)
				}
				if !want {
					require.Equal(t, from, b.status(t, o.ID))
					require.Equal(t, eventsBefore, b.count(t, "SELECT count(*) FROM order_event WHERE order_id = $1", o.ID))
					require.Equal(t, stockBefore, b.stock(t, sku))
				}
				b.requireStockMatchesOrders(t, sku, 10)
			})
		}
	}
}

func TestPay(t *testing.T) {
	t.Parallel()

	t.Run("FromCreatedConfirmsInlineAndPostsTheEntry", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sku := b.sku("A")
		b.product(t, sku, 1250, 5)
		o := b.order(t, b.buyer(1), sku, 2)
		pid := "pay-" + b.suffix

		paid, ok, err := b.svc.Pay(b.ctx, o.ID, orders.PayInput{PaymentID: pid, AmountMinor: 2500})
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, orders.StatusPaid, paid.Status)
		require.NotNil(t, paid.ConfirmedAt)
		require.NotNil(t, paid.PaidAt)
		require.Equal(t, pid, *paid.PaymentID)
		require.NotNil(t, paid.LedgerEntryID)
		require.Equal(t, stock{OnHand: 3, Sold: 2}, b.stock(t, sku))

		evs, err := b.svc.Events(b.ctx, o.ID, 0, 50)
		require.NoError(t, err)
		require.Len(t, evs, 3)
		require.Equal(t, []orders.Status{orders.StatusCreated, orders.StatusConfirmed, orders.StatusPaid}, []orders.Status{evs[0].To, evs[1].To, evs[2].To})
		require.Equal(t, orders.StatusCreated, *evs[1].From)
		require.Equal(t, orders.StatusConfirmed, *evs[2].From)
		require.Equal(t, pid, *evs[2].Detail)

		entry, err := ledger.NewService(b.store).GetEntry(b.ctx, *paid.LedgerEntryID)
		require.NoError(t, err)
		require.Equal(t, orders.PaymentEntryKey(pid), entry.IdempotencyKey)
		require.Equal(t, "CNY", entry.Currency)
		postings := map[string]int64{}
		for _, p := range entry.Postings {
			postings[p.Account] = p.AmountMinor
		}
		require.Equal(t, map[string]int64{ledger.AccountPlatformCash: 2500, ledger.MerchantPayable(o.MerchantID): -2500}, postings)

		// The same payment again: the order as it is, nothing new written.
		again, ok, err := b.svc.Pay(b.ctx, o.ID, orders.PayInput{PaymentID: pid, AmountMinor: 2500})
		require.NoError(t, err)
		require.False(t, ok)
		require.Equal(t, paid.LedgerEntryID, again.LedgerEntryID)
		require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key = $1", orders.PaymentEntryKey(pid)))
		require.EqualValues(t, 3, b.count(t, "SELECT count(*) FROM order_event WHERE order_id = $1", o.ID))

		// Still idempotent after shipping.
		_, err = b.svc.Ship(b.ctx, o.ID, "SF-1")
		require.NoError(t, err)
		again, ok, err = b.svc.Pay(b.ctx, o.ID, orders.PayInput{PaymentID: pid, AmountMinor: 2500})
		require.NoError(t, err)
		require.False(t, ok)
		require.Equal(t, orders.StatusShipped, again.Status)

		// Another payment of a paid order is not a transition.
		_, _, err = b.svc.Pay(b.ctx, o.ID, orders.PayInput{PaymentID: pid + "-2", AmountMinor: 2500})
		requireCode(t, err, riverbank.EINVALIDTRANSITION)

		// The same payment_id with another amount is a different payload
		// for the same key (SPEC §2), not a validation error.
		_, _, err = b.svc.Pay(b.ctx, o.ID, orders.PayInput{PaymentID: pid, AmountMinor: 2501})
		requireCode(t, err, riverbank.EIDEMPOTENCYCONFLICT)
		require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key = $1", orders.PaymentEntryKey(pid)))
	})

	t.Run("WrongAmountWritesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sku := b.sku("A")
		b.product(t, sku, 1000, 5)
		o := b.order(t, b.buyer(1), sku, 1)
		for _, amount := range []int64{999, 1001, 0, -1000} {
			_, _, err := b.svc.Pay(b.ctx, o.ID, orders.PayInput{PaymentID: "p-" + b.suffix, AmountMinor: amount})
			de := requireCode(t, err, riverbank.EUNPROCESSABLE)
			require.EqualValues(t, 1000, de.Details["total_minor"])
		}
		_, _, err := b.svc.Pay(b.ctx, o.ID, orders.PayInput{PaymentID: "", AmountMinor: 1000})
		requireCode(t, err, riverbank.EINVALID)
		require.Equal(t, orders.StatusCreated, b.status(t, o.ID))
		require.Equal(t, stock{OnHand: 5, Reserved: 1}, b.stock(t, sku))
		require.Zero(t, b.count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key = $1", orders.PaymentEntryKey("p-"+b.suffix)))
		require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM order_event WHERE order_id = $1", o.ID))
	})

	t.Run("PaymentIDOfAnotherOrderConflicts", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sku := b.sku("A")
		b.product(t, sku, 1000, 5)
		o1 := b.order(t, b.buyer(1), sku, 1)
		o2 := b.order(t, b.buyer(2), sku, 1)
		pid := "shared-" + b.suffix
		_, _, err := b.svc.Pay(b.ctx, o1.ID, orders.PayInput{PaymentID: pid, AmountMinor: 1000})
		require.NoError(t, err)
		_, _, err = b.svc.Pay(b.ctx, o2.ID, orders.PayInput{PaymentID: pid, AmountMinor: 1000})
		de := requireCode(t, err, riverbank.EIDEMPOTENCYCONFLICT)
		require.Equal(t, o1.ID, de.Details["order_id"])
		// The inline confirmation of o2 was rolled back with the rest.
		require.Equal(t, orders.StatusCreated, b.status(t, o2.ID))
		require.Equal(t, stock{OnHand: 4, Reserved: 1, Sold: 1}, b.stock(t, sku))
	})

	t.Run("UnknownOrderIsNotFound", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, _, err := b.svc.Pay(b.ctx, 1<<62, orders.PayInput{PaymentID: "p", AmountMinor: 1})
		requireCode(t, err, riverbank.ENOTFOUND)
		_, err = b.svc.Cancel(b.ctx, 1<<62, "x")
		requireCode(t, err, riverbank.ENOTFOUND)
		_, err = b.svc.Confirm(b.ctx, 1<<62)
		requireCode(t, err, riverbank.ENOTFOUND)
	})
}

func TestShipReceiveCancel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sku := b.sku("A")
	b.product(t, sku, 100, 10)

	o := b.order(t, b.buyer(1), sku, 4)
	_, _, err := b.svc.Pay(b.ctx, o.ID, orders.PayInput{PaymentID: "p-" + b.suffix, AmountMinor: 400})
	require.NoError(t, err)
	shipped, err := b.svc.Ship(b.ctx, o.ID, "SF123")
	require.NoError(t, err)
	require.Equal(t, orders.StatusShipped, shipped.Status)
	require.Equal(t, "SF123", *shipped.TrackingNo)
	require.NotNil(t, shipped.ShippedAt)
	done, err := b.svc.Receive(b.ctx, o.ID)
	require.NoError(t, err)
	require.Equal(t, orders.StatusCompleted, done.Status)
	require.NotNil(t, done.CompletedAt)
	require.Len(t, done.Items, 1)
	_, err = b.svc.Ship(b.ctx, o.ID, "")
	requireCode(t, err, riverbank.EINVALID)

	// Cancelling a CREATED order gives back its reservation; a CONFIRMED
	// one its sold units.
	c1 := b.order(t, b.buyer(2), sku, 2)
	c2 := b.order(t, b.buyer(3), sku, 3)
	_, err = b.svc.Confirm(b.ctx, c2.ID)
	require.NoError(t, err)
	require.Equal(t, stock{OnHand: 3, Reserved: 2, Sold: 7}, b.stock(t, sku))
	got, err := b.svc.Cancel(b.ctx, c1.ID, "buyer asked")
	require.NoError(t, err)
	require.Equal(t, "buyer asked", *got.CancelReason)
	require.NotNil(t, got.CancelledAt)
	_, err = b.svc.Cancel(b.ctx, c2.ID, "out of budget")
	require.NoError(t, err)
	require.Equal(t, stock{OnHand: 6, Reserved: 0, Sold: 4}, b.stock(t, sku))
	b.requireStockMatchesOrders(t, sku, 10)
	_, err = b.svc.Cancel(b.ctx, c1.ID, "again")
	requireCode(t, err, riverbank.EINVALIDTRANSITION)
	_, err = b.svc.Cancel(b.ctx, c2.ID, "")
	requireCode(t, err, riverbank.EINVALID)
}

func TestExpire(t *testing.T) {
	t.Parallel()

	for _, confirmed := range []bool{false, true} {
		t.Run(fmt.Sprintf("Confirmed=%v/ReleasesExactlyOnceWhenRunTwice", confirmed), func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			sku := b.sku("A")
			b.product(t, sku, 100, 10)
			o := b.order(t, b.buyer(1), sku, 4)
			if confirmed {
				_, err := b.svc.Confirm(b.ctx, o.ID)
				require.NoError(t, err)
			}
			expired, err := b.svc.Expire(b.ctx, o.ID)
			require.NoError(t, err)
			require.True(t, expired)
			expired, err = b.svc.Expire(b.ctx, o.ID)
			require.NoError(t, err)
			require.False(t, expired)

			got, err := b.svc.Get(b.ctx, o.ID)
			require.NoError(t, err)
			require.Equal(t, orders.StatusCancelled, got.Status)
			require.Equal(t, orders.ReasonPaymentTimeout, *got.CancelReason)
			require.Equal(t, stock{OnHand: 10}, b.stock(t, sku))
			b.requireStockMatchesOrders(t, sku, 10)
			require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM order_event WHERE order_id = $1 AND to_status = 'CANCELLED' AND actor = $2", o.ID, orders.ActorExpire))
		})
	}
}

// TestPayVersusExpire races a payment with the expiry job on each of many
// orders (half of them already CONFIRMED): exactly one wins per order, and
// stock and ledger agree with the winners.
func TestPayVersusExpire(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	sku := b.sku("RACE")
	const n, price = 30, 700
	b.product(t, sku, price, n)
	os := make([]*orders.Order, n)
	for i := range os {
		os[i] = b.order(t, b.buyer(i), sku, 1)
		if i%2 == 1 {
			_, err := b.svc.Confirm(b.ctx, os[i].ID)
			require.NoError(t, err)
		}
	}

	type result struct {
		paid, expired bool
		payErr        error
		expErr        error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, o := range os {
		wg.Go(func() {
			<-start
			_, results[i].paid, results[i].payErr = b.svc.Pay(b.ctx, o.ID, orders.PayInput{PaymentID: fmt.Sprintf("p-%d", o.ID), AmountMinor: price})
		})
		wg.Go(func() {
			<-start
			results[i].expired, results[i].expErr = b.svc.Expire(b.ctx, o.ID)
		})
	}
	close(start)
	wg.Wait()

	var paid int64
	for i, r := range results {
		require.NoError(t, r.expErr)
		if r.payErr != nil {
			requireCode(t, r.payErr, riverbank.EINVALIDTRANSITION)
		}
		require.NotEqual(t, r.paid, r.expired, "order %d: exactly one of pay and expire wins", os[i].ID)
		require.Equal(t, r.paid, r.payErr == nil)
		want := orders.StatusCancelled
		if r.paid {
			want = orders.StatusPaid
			paid++
		}
		require.Equal(t, want, b.status(t, os[i].ID))
	}
	require.Equal(t, stock{OnHand: n - paid, Reserved: 0, Sold: paid}, b.stock(t, sku))
	b.requireStockMatchesOrders(t, sku, n)
	// One payment entry per paid order, referenced by it, none for the others.
	require.Equal(t, paid, b.count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key LIKE 'sys:order-payment:%'"))
	require.Equal(t, paid, b.count(t, `SELECT count(*) FROM orders o JOIN ledger_entry e ON e.id = o.ledger_entry_id
		WHERE o.status = 'PAID' AND e.idempotency_key = 'sys:order-payment:' || o.payment_id`))
	require.Equal(t, -paid*price, b.count(t, `SELECT coalesce(sum(p.amount_minor), 0)::bigint FROM ledger_posting p
		JOIN ledger_account a ON a.id = p.account_id WHERE a.code = $1`, ledger.MerchantPayable(b.merchant("m"))))
	require.Equal(t, paid*price, b.count(t, `SELECT coalesce(sum(p.amount_minor), 0)::bigint FROM ledger_posting p
		JOIN ledger_account a ON a.id = p.account_id WHERE a.code = $1`, ledger.AccountPlatformCash))
}

// TestCancelVersusConfirm races a cancel with the confirm job: both orders
// of events are legal, and either way the stock comes back exactly once.
func TestCancelVersusConfirm(t *testing.T) {
	t.Parallel()
	b := setupDB(t)
	sku := b.sku("CC")
	const n = 30
	b.product(t, sku, 100, 2*n)
	os := make([]*orders.Order, n)
	for i := range os {
		os[i] = b.order(t, b.buyer(i), sku, 2)
	}
	confirmed := make([]bool, n)
	errs := make([]error, 2*n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, o := range os {
		wg.Go(func() {
			<-start
			confirmed[i], errs[2*i] = b.svc.Confirm(b.ctx, o.ID)
		})
		wg.Go(func() {
			<-start
			_, errs[2*i+1] = b.svc.Cancel(b.ctx, o.ID, "race")
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	for i, o := range os {
		require.Equal(t, orders.StatusCancelled, b.status(t, o.ID))
		events := b.count(t, "SELECT count(*) FROM order_event WHERE order_id = $1", o.ID)
		if confirmed[i] {
			require.EqualValues(t, 3, events) // CREATED, CONFIRMED, CANCELLED
		} else {
			require.EqualValues(t, 2, events) // CREATED, CANCELLED
		}
	}
	require.Equal(t, stock{OnHand: 2 * n}, b.stock(t, sku))
	b.requireStockMatchesOrders(t, sku, 2*n)
}
