package orders

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/events"
)

// ItemInput is one requested line.
type ItemInput struct {
	SKU      string `json:"sku"`
	Quantity int64  `json:"quantity"`
}

// CreateInput is POST /v1/orders.
type CreateInput struct {
	BuyerID    string
	MerchantID string
	// Identifier is the buyer's idempotency key: (BuyerID, Identifier)
	// identifies the order.
	Identifier string
	Items      []ItemInput
}

// Validate checks an order request's shape without touching the database.
func (in *CreateInput) Validate() error {
	if !buyerRE.MatchString(in.BuyerID) {
		return invalid("buyer_id %q must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', ':', '@', '-', starting with a letter or digit", in.BuyerID).WithDetail("field", "buyer_id")
	}
	if !merchantRE.MatchString(in.MerchantID) {
		return invalid("merchant_id %q must be 1-64 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit (it names the ledger account merchant:{merchant_id}:payable)", in.MerchantID).WithDetail("field", "merchant_id")
	}
	if err := text("identifier", in.Identifier, MaxIdentLen); err != nil {
		return err
	}
	if len(in.Items) < 1 || len(in.Items) > MaxItems {
		return invalid("items must have 1..%d lines", MaxItems).WithDetail("field", "items")
	}
	seen := make(map[string]int, len(in.Items))
	for i, it := range in.Items {
		if !skuRE.MatchString(it.SKU) {
			return invalid("items[%d].sku %q is not a valid sku", i, it.SKU).WithDetail("field", fmt.Sprintf("items[%d].sku", i))
		}
		if it.Quantity < 1 || it.Quantity > MaxQuantity {
			return invalid("items[%d].quantity must be between 1 and %d", i, MaxQuantity).WithDetail("field", fmt.Sprintf("items[%d].quantity", i))
		}
		if j, dup := seen[it.SKU]; dup {
			return invalid("items[%d] repeats sku %s of items[%d]: put the whole quantity on one line", i, it.SKU, j).
				WithDetail("field", fmt.Sprintf("items[%d].sku", i)).WithDetail("sku", it.SKU)
		}
		seen[it.SKU] = i
	}
	return nil
}

// requestHash identifies the request for idempotency: the same (buyer_id,
// identifier) with the same hash is a replay, with another a conflict. Lines
// are hashed in sku order, so listing the same lines in another order is the
// same request.
func (in *CreateInput) requestHash() string {
	items := slices.Clone(in.Items)
	slices.SortFunc(items, func(a, b ItemInput) int { return strings.Compare(a.SKU, b.SKU) })
	b, _ := json.Marshal(struct {
		M string      `json:"m"`
		I []ItemInput `json:"i"`
	}{in.MerchantID, items})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// createAttempts bounds how often Create re-runs when a product's price
// changes between pricing and reserving.
const createAttempts = 3

func insufficientStock(sku string, requested, available int64) error {
	return riverbank.Errorf(riverbank.EINSUFFICIENTSTOCK, "insufficient stock for sku %s: %d requested, %d available", sku, requested, max(available, 0)).
		WithDetail("sku", sku).WithDetail("requested", requested).WithDetail("available", max(available, 0))
}

// Create places an order (SPEC §3). In one transaction it claims the
// (buyer_id, identifier) key, inserts the order, its items and its CREATED
// event and reserves stock for every line with a conditional update on
// product rows locked in sku order, and asks for the lingering order
// confirmer (one statement, InsertOrder; the order that creates the
// confirm signal inserts order.confirm); its expiry is the order.expire
// sweep's, by expires_at. A shortage on any line rolls all of it back and
// returns insufficient_stock naming the sku.
//
// It returns the order and whether it was created now: a repeat of the same
// request (same buyer_id, identifier, merchant_id and lines) returns the
// original order with created=false, even when the stock has run out since;
// a different request under the same key is idempotency_conflict.
//
// Prices and availability are read first without locks, so a request that
// cannot fit (a sold-out flash sale) is turned away without a transaction
// or a lock; a hot sku's row lock is held from the reservation through the
// job insert and the commit. If a price changed in between, the attempt is
// rolled back and run again.
func (s *Service) Create(ctx context.Context, in CreateInput) (*Order, bool, error) {
	if err := in.Validate(); err != nil {
		return nil, false, err
	}
	hash := in.requestHash()
	for range createAttempts {
		o, err := s.createOnce(ctx, &in, hash)
		if err == nil {
			return o, true, nil
		}
		keyTaken := errors.Is(err, errKeyTaken)
		if keyTaken || riverbank.ErrorCode(err) == riverbank.EINSUFFICIENTSTOCK {
			// The key may have been taken by an earlier (or concurrent, now
			// committed) identical request: that is a replay, whatever the
			// stock is now.
			existing, rerr := s.existing(ctx, &in, hash)
			if rerr != nil {
				return nil, false, rerr
			}
			if existing != nil {
				return existing, false, nil
			}
			if !keyTaken {
				return nil, false, err
			}
			continue // cannot happen (orders are never deleted); try again
		}
		if errors.Is(err, errRetry) {
			continue
		}
		return nil, false, err
	}
	return nil, false, riverbank.Errorf(riverbank.ECONFLICT, "product prices kept changing while the order was placed; retry the request")
}

// errKeyTaken: an order with the same (buyer_id, identifier) committed
// first; InsertOrder wrote nothing.
var errKeyTaken = errors.New("order key taken")

// existing returns the order already stored under in's key: nil if there is
// none, idempotency_conflict if it was created from a different request.
func (s *Service) existing(ctx context.Context, in *CreateInput, hash string) (*Order, error) {
	q := s.store.Queries()
	r, err := q.GetOrderByKey(ctx, db.GetOrderByKeyParams{BuyerID: in.BuyerID, Identifier: in.Identifier})
	if db.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find order by key: %w", err)
	}
	if r.RequestHash != hash {
		return nil, riverbank.Errorf(riverbank.EIDEMPOTENCYCONFLICT, "identifier %q of buyer %s was already used for a different order (%d)", in.Identifier, in.BuyerID, r.ID).
			WithDetail("order_id", r.ID)
	}
	return loadOrder(ctx, q, &r)
}

func (s *Service) createOnce(ctx context.Context, in *CreateInput, hash string) (*Order, error) {
	skus := make([]string, len(in.Items))
	qty := make(map[string]int64, len(in.Items))
	for i, it := range in.Items {
		skus[i] = it.SKU
		qty[it.SKU] = it.Quantity
	}
	// Price and pre-check against a snapshot, without locks.
	snap, err := s.store.Queries().ProductsBySKUs(ctx, skus)
	if err != nil {
		return nil, fmt.Errorf("read products: %w", err)
	}
	price := make(map[string]int64, len(snap))
	currency := ""
	for _, p := range snap {
		price[p.Sku] = p.PriceMinor
		if currency == "" {
			currency = p.Currency
		} else if p.Currency != currency {
			return nil, riverbank.Errorf(riverbank.EUNPROCESSABLE, "items are priced in different currencies (%s, %s): one order has one currency", currency, p.Currency)
		}
	}
	for i, sku := range skus {
		if _, ok := price[sku]; !ok {
			return nil, riverbank.Errorf(riverbank.EUNPROCESSABLE, "unknown sku %s in items[%d]", sku, i).
				WithDetail("sku", sku).WithDetail("field", fmt.Sprintf("items[%d].sku", i))
		}
	}
	for _, p := range snap {
		// A snapshot that shows too little stock is a valid moment to say no.
		if avail := p.StockOnHand - p.StockReserved; avail < qty[p.Sku] {
			return nil, insufficientStock(p.Sku, qty[p.Sku], avail)
		}
	}
	quantities := make([]int64, len(in.Items))
	prices := make([]int64, len(in.Items))
	var total int64
	for i, it := range in.Items {
		quantities[i] = it.Quantity
		prices[i] = price[it.SKU]
		// quantity ≤ 10^6 and price ≤ 10^15: check before multiplying.
		if prices[i] > (MaxTotalMinor-total)/it.Quantity {
			return nil, riverbank.Errorf(riverbank.EUNPROCESSABLE, "order total exceeds %d minor units", int64(MaxTotalMinor))
		}
		total += it.Quantity * prices[i]
	}

	return db.InTxV(ctx, s.store, func(tx *db.Tx) (*Order, error) {
		// The statement appends the order.created feed event too (its
		// stored row: schema step 10).
		typ := ""
		if events.On() {
			typ = events.OrderCreated
		}
		row, err := tx.InsertOrder(ctx, db.InsertOrderParams{
			EventType: typ,
			BuyerID:   in.BuyerID, MerchantID: in.MerchantID, Identifier: in.Identifier, RequestHash: hash,
			TotalMinor: total, Currency: currency, PaymentTimeoutUs: s.paymentTimeout.Microseconds(),
			Skus: skus, Quantities: quantities, UnitPrices: prices, Actor: ActorAPI,
		})
		if db.IsNotFound(err) {
			return nil, errKeyTaken
		}
		if err != nil {
			return nil, fmt.Errorf("insert order: %w", err)
		}
		switch {
		case !row.PricesHeld:
			return nil, errRetry // priced from a stale snapshot
		case row.ShortSku != "":
			return nil, insufficientStock(row.ShortSku, qty[row.ShortSku], row.ShortAvailable)
		case int(row.LinesReserved) != len(skus):
			return nil, fmt.Errorf("reserve stock: %d of %d lines reserved", row.LinesReserved, len(skus))
		}
		o := db.Order{
			ID: row.ID, BuyerID: row.BuyerID, MerchantID: row.MerchantID, Identifier: row.Identifier, RequestHash: row.RequestHash,
			Status: row.Status, TotalMinor: row.TotalMinor, Currency: row.Currency, CreatedAt: row.CreatedAt, ExpiresAt: row.ExpiresAt,
			UpdatedAt: row.UpdatedAt,
		}
		// Neither confirmation nor expiry needs a job of its own: the
		// statement asked for the lingering confirmer (only the order that
		// created its signal inserts the job), and the order.expire sweep
		// reads unpaid orders by expires_at (orders_unpaid_expiry_idx).
		if row.ConfirmerRequested {
			if _, err := tx.Insert(ctx, ConfirmArgs{}, nil); err != nil {
				return nil, err
			}
		}
		out := orderFromRow(o, nil)
		out.Items = make([]Item, len(in.Items))
		for i, it := range in.Items {
			out.Items[i] = Item{SKU: it.SKU, Quantity: it.Quantity, UnitPriceMinor: prices[i], AmountMinor: it.Quantity * prices[i]}
		}
		if typ != "" {
			events.Appended(tx)
		}
		return out, nil
	})
}
