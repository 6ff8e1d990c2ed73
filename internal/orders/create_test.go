package orders_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"github.com/riverqueue/river/rivertype"

	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/orders"
)

func TestCreate(t *testing.T) {
	t.Parallel()

	t.Run("ReservesAndEnqueuesJobsInOneTransaction", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a, c := b.sku("A"), b.sku("C")
		b.product(t, a, 250, 10)
		b.product(t, c, 1000, 5)
		in := orders.CreateInput{BuyerID: b.buyer(1), MerchantID: b.merchant("m"), Identifier: "cart-1",
			Items: []orders.ItemInput{{SKU: c, Quantity: 2}, {SKU: a, Quantity: 3}}}
		o, created, err := b.svc.Create(b.ctx, in)
		require.NoError(t, err)
		require.True(t, created)
		require.Equal(t, orders.StatusCreated, o.Status)
		require.EqualValues(t, 2*1000+3*250, o.TotalMinor)
		require.Equal(t, "CNY", o.Currency)
		// Lines keep the request's order and their prices.
		require.Equal(t, []orders.Item{{SKU: c, Quantity: 2, UnitPriceMinor: 1000, AmountMinor: 2000}, {SKU: a, Quantity: 3, UnitPriceMinor: 250, AmountMinor: 750}}, o.Items)
		require.Equal(t, o.CreatedAt.Add(15*time.Minute), o.ExpiresAt)
		require.Nil(t, o.ConfirmedAt)
		require.Nil(t, o.CancelReason)

		require.Equal(t, stock{OnHand: 10, Reserved: 3}, b.stock(t, a))
		require.Equal(t, stock{OnHand: 5, Reserved: 2}, b.stock(t, c))

		got, err := b.svc.Get(b.ctx, o.ID)
		require.NoError(t, err)
		require.Equal(t, o.Items, got.Items)
		require.Equal(t, o.ExpiresAt, got.ExpiresAt)

		evs, err := b.svc.Events(b.ctx, o.ID, 0, 50)
		require.NoError(t, err)
		require.Len(t, evs, 1)
		require.Nil(t, evs[0].From)
		require.Equal(t, orders.StatusCreated, evs[0].To)
		require.Equal(t, orders.ActorAPI, evs[0].Actor)

		// The order asked for the lingering confirmer in its transaction
		// (no confirmer was due: it inserted the job), and no job of its
		// own for the expiry (the order.expire sweep reads expires_at).
		jobs := rivertest.RequireManyInsertedTx[*riverpgxv5.Driver](b.ctx, t, b.dbtx.(pgx.Tx), []rivertest.ExpectedJob{
			{Args: orders.ConfirmArgs{}, Opts: &rivertest.RequireInsertedOpts{State: rivertype.JobStateAvailable}},
		})
		require.Len(t, jobs, 1)
		rivertest.RequireNotInsertedTx[*riverpgxv5.Driver](b.ctx, t, b.dbtx.(pgx.Tx), &orders.ExpireArgs{}, nil)
	})

	t.Run("ShortageOnAnyLineWritesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a, z := b.sku("A"), b.sku("Z")
		b.product(t, a, 100, 10)
		b.product(t, z, 100, 1)
		_, _, err := b.svc.Create(b.ctx, orders.CreateInput{BuyerID: b.buyer(1), MerchantID: "m", Identifier: "x",
			Items: []orders.ItemInput{{SKU: a, Quantity: 5}, {SKU: z, Quantity: 2}}})
		de := requireCode(t, err, riverbank.EINSUFFICIENTSTOCK)
		require.Equal(t, z, de.Details["sku"])
		require.Contains(t, de.Message, z)
		require.Equal(t, stock{OnHand: 10}, b.stock(t, a))
		require.Equal(t, stock{OnHand: 1}, b.stock(t, z))
		require.Zero(t, b.count(t, "SELECT count(*) FROM orders WHERE buyer_id = $1", b.buyer(1)))
		require.Zero(t, b.count(t, "SELECT count(*) FROM order_item WHERE sku IN ($1, $2)", a, z))
	})

	t.Run("BadInputWritesNothing", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		sku, big := b.sku("A"), b.sku("BIG")
		b.product(t, sku, 100, 1000)
		b.product(t, big, orders.MaxPriceMinor, 1_000_000)
		valid := func() orders.CreateInput {
			return orders.CreateInput{BuyerID: b.buyer(1), MerchantID: "m", Identifier: "bad", Items: []orders.ItemInput{{SKU: sku, Quantity: 1}}}
		}
		tests := []struct {
			name string
			mut  func(*orders.CreateInput)
			code string
		}{
			{"EmptyItems", func(in *orders.CreateInput) { in.Items = nil }, riverbank.EINVALID},
			{"TooManyItems", func(in *orders.CreateInput) {
				in.Items = nil
				for i := range orders.MaxItems + 1 {
					in.Items = append(in.Items, orders.ItemInput{SKU: fmt.Sprintf("S%d", i), Quantity: 1})
				}
			}, riverbank.EINVALID},
			{"ZeroQuantity", func(in *orders.CreateInput) { in.Items[0].Quantity = 0 }, riverbank.EINVALID},
			{"NegativeQuantity", func(in *orders.CreateInput) { in.Items[0].Quantity = -3 }, riverbank.EINVALID},
			{"HugeQuantity", func(in *orders.CreateInput) { in.Items[0].Quantity = orders.MaxQuantity + 1 }, riverbank.EINVALID},
			{"DuplicateSKULines", func(in *orders.CreateInput) { in.Items = append(in.Items, orders.ItemInput{SKU: sku, Quantity: 2}) }, riverbank.EINVALID},
			{"MalformedSKU", func(in *orders.CreateInput) { in.Items[0].SKU = "a b" }, riverbank.EINVALID},
			{"UnknownSKU", func(in *orders.CreateInput) { in.Items[0].SKU = b.sku("NOPE") }, riverbank.EUNPROCESSABLE},
			{"EmptyBuyer", func(in *orders.CreateInput) { in.BuyerID = "" }, riverbank.EINVALID},
			{"UpperCaseMerchant", func(in *orders.CreateInput) { in.MerchantID = "Shop" }, riverbank.EINVALID},
			{"EmptyIdentifier", func(in *orders.CreateInput) { in.Identifier = "" }, riverbank.EINVALID},
			{"LongIdentifier", func(in *orders.CreateInput) { in.Identifier = strings.Repeat("x", orders.MaxIdentLen+1) }, riverbank.EINVALID},
			{"NULInIdentifier", func(in *orders.CreateInput) { in.Identifier = "a\x00" }, riverbank.EINVALID},
			{"TotalOverflow", func(in *orders.CreateInput) { in.Items[0] = orders.ItemInput{SKU: big, Quantity: 10_000} }, riverbank.EUNPROCESSABLE},
		}
		for _, tt := range tests {
			in := valid()
			tt.mut(&in)
			_, _, err := b.svc.Create(b.ctx, in)
			require.Equal(t, tt.code, riverbank.ErrorCode(err), "%s: %v", tt.name, err)
		}
		require.Zero(t, b.count(t, "SELECT count(*) FROM orders WHERE buyer_id = $1", b.buyer(1)))
		require.Zero(t, b.count(t, "SELECT count(*) FROM order_item WHERE sku IN ($1, $2)", sku, big))
		require.Equal(t, stock{OnHand: 1000}, b.stock(t, sku))
		require.Equal(t, stock{OnHand: 1_000_000}, b.stock(t, big))
	})

	t.Run("IdempotentOnBuyerAndIdentifier", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		a, c := b.sku("A"), b.sku("C")
		b.product(t, a, 100, 2)
		b.product(t, c, 100, 5)
		in := orders.CreateInput{BuyerID: b.buyer(1), MerchantID: "m", Identifier: "k1",
			Items: []orders.ItemInput{{SKU: a, Quantity: 2}, {SKU: c, Quantity: 1}}}
		first, created, err := b.svc.Create(b.ctx, in)
		require.NoError(t, err)
		require.True(t, created)

		// Same lines in another order: a replay, even though a is sold out now.
		replay := in
		replay.Items = []orders.ItemInput{{SKU: c, Quantity: 1}, {SKU: a, Quantity: 2}}
		again, created, err := b.svc.Create(b.ctx, replay)
		require.NoError(t, err)
		require.False(t, created)
		require.Equal(t, first.ID, again.ID)
		require.Equal(t, first.Items, again.Items)
		require.Equal(t, stock{OnHand: 2, Reserved: 2}, b.stock(t, a))

		for name, mut := range map[string]func(*orders.CreateInput){
			"OtherQuantity": func(in *orders.CreateInput) { in.Items = []orders.ItemInput{{SKU: c, Quantity: 2}} },
			"OtherMerchant": func(in *orders.CreateInput) { in.MerchantID = "other" },
		} {
			other := in
			other.Items = append([]orders.ItemInput(nil), in.Items...)
			mut(&other)
			_, _, err := b.svc.Create(b.ctx, other)
			de := requireCode(t, err, riverbank.EIDEMPOTENCYCONFLICT)
			require.Equal(t, first.ID, de.Details["order_id"], name)
		}
		// The same identifier for another buyer is another order.
		other := in
		other.BuyerID = b.buyer(2)
		other.Items = []orders.ItemInput{{SKU: c, Quantity: 1}}
		_, created, err = b.svc.Create(b.ctx, other)
		require.NoError(t, err)
		require.True(t, created)
		require.Equal(t, stock{OnHand: 5, Reserved: 2}, b.stock(t, c))
	})

	t.Run("FiftyBuyersRaceForTenUnits", func(t *testing.T) {
		t.Parallel()
		b := setupDB(t)
		sku := b.sku("HOT")
		b.product(t, sku, 9900, 10)

		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			ok, short int
			other     []error
		)
		start := make(chan struct{})
		for i := range 50 {
			wg.Go(func() {
				<-start
				_, created, err := b.svc.Create(b.ctx, orders.CreateInput{BuyerID: b.buyer(i), MerchantID: "m", Identifier: "flash",
					Items: []orders.ItemInput{{SKU: sku, Quantity: 1}}})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil && created:
					ok++
				case riverbank.ErrorCode(err) == riverbank.EINSUFFICIENTSTOCK:
					short++
				default:
					other = append(other, err)
				}
			})
		}
		close(start)
		wg.Wait()
		require.Empty(t, other)
		require.Equal(t, 10, ok)
		require.Equal(t, 40, short)
		require.EqualValues(t, 10, b.count(t, "SELECT count(*) FROM orders"))
		require.Equal(t, stock{OnHand: 10, Reserved: 10}, b.stock(t, sku))
		b.requireStockMatchesOrders(t, sku, 10)
		require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM river_job WHERE kind = 'order.confirm'"), "one lingering confirmer for all of them")
		require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM order_confirm_signal"))
		require.Zero(t, b.count(t, "SELECT count(*) FROM river_job WHERE kind = 'order.expire'"), "expiry is the sweep's, not a job per order")
	})

	t.Run("SameKeyFromTwentyGoroutines", func(t *testing.T) {
		t.Parallel()
		b := setupDB(t)
		sku := b.sku("K")
		// Stock for exactly one order: a replay must not see insufficient_stock.
		b.product(t, sku, 100, 3)
		in := orders.CreateInput{BuyerID: b.buyer(1), MerchantID: "m", Identifier: "double-click", Items: []orders.ItemInput{{SKU: sku, Quantity: 3}}}

		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			ids     = map[int64]int{}
			created int
			errs    []error
		)
		start := make(chan struct{})
		for range 20 {
			wg.Go(func() {
				<-start
				o, c, err := b.svc.Create(b.ctx, in)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				ids[o.ID]++
				if c {
					created++
				}
			})
		}
		close(start)
		wg.Wait()
		require.Empty(t, errs)
		require.Len(t, ids, 1)
		require.Equal(t, 1, created)
		require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM orders"))
		require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM order_event"))
		require.Equal(t, stock{OnHand: 3, Reserved: 3}, b.stock(t, sku))
		require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM river_job"), "one order.confirm")
	})

	t.Run("MultiItemOrdersNeverDeadlock", func(t *testing.T) {
		t.Parallel()
		b := setupDB(t)
		skus := []string{b.sku("P"), b.sku("Q"), b.sku("R"), b.sku("S")}
		const initial = 400
		for _, s := range skus {
			b.product(t, s, 100, initial)
		}
		// Overlapping multi-item orders with lines in random orders, racing
		// with confirmations and cancellations of the orders already placed
		// (Postgres reports a deadlock as an error, which fails the test).
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs []error
		)
		fail := func(err error) {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
		start := make(chan struct{})
		for i := range 40 {
			wg.Go(func() {
				<-start
				for round := range 5 {
					perm := rand.Perm(len(skus))
					var items []orders.ItemInput
					for _, p := range perm[:2+i%3] {
						items = append(items, orders.ItemInput{SKU: skus[p], Quantity: int64(1 + i%2)})
					}
					o, _, err := b.svc.Create(b.ctx, orders.CreateInput{BuyerID: b.buyer(i), MerchantID: "m", Identifier: fmt.Sprint("multi-", round), Items: items})
					if riverbank.ErrorCode(err) == riverbank.EINSUFFICIENTSTOCK {
						continue
					}
					if err != nil {
						fail(err)
						return
					}
					if (i+round)%2 == 0 {
						if _, err := b.svc.Confirm(b.ctx, o.ID); err != nil {
							fail(err)
						}
					}
					if (i+round)%3 == 0 {
						if _, err := b.svc.Cancel(b.ctx, o.ID, "changed mind"); err != nil {
							fail(err)
						}
					} else if (i+round)%3 == 1 {
						if _, err := b.svc.Expire(b.ctx, o.ID); err != nil {
							fail(err)
						}
					}
				}
			})
		}
		close(start)
		wg.Wait()
		require.Empty(t, errs)
		require.Positive(t, b.count(t, "SELECT count(*) FROM orders"))
		for _, s := range skus {
			b.requireStockMatchesOrders(t, s, initial)
		}
	})
}

// TestInsertOrderDetectsStalePrices: the create statement reports when the
// prices it locked differ from the unit prices the order was priced with
// (a PUT between Create's unlocked read and its transaction), so Create
// rolls back and prices again instead of selling at a stale price.
func TestInsertOrderDetectsStalePrices(t *testing.T) {
	t.Parallel()
	b := setup(t)
	sku := b.sku("P")
	b.product(t, sku, 500, 10)
	err := b.store.InTx(b.ctx, func(tx *db.Tx) error {
		row, err := tx.InsertOrder(b.ctx, db.InsertOrderParams{
			BuyerID: b.buyer(1), MerchantID: "m", Identifier: "stale", RequestHash: "h", TotalMinor: 400, Currency: "CNY",
			PaymentTimeoutUs: time.Minute.Microseconds(), Skus: []string{sku}, Quantities: []int64{1}, UnitPrices: []int64{400}, Actor: orders.ActorAPI,
		})
		require.NoError(t, err)
		require.False(t, row.PricesHeld)
		require.EqualValues(t, 1, row.LinesReserved)
		require.Empty(t, row.ShortSku)
		return errors.New("roll back")
	})
	require.EqualError(t, err, "roll back")
	require.Equal(t, stock{OnHand: 10}, b.stock(t, sku))

	// Create itself prices from the current price.
	o := b.order(t, b.buyer(2), sku, 2)
	require.EqualValues(t, 1000, o.TotalMinor)
}
