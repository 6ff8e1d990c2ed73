package orders

import (
	"context"
	"fmt"
	"time"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/events"
)

// ProductInput creates or updates a product (PUT /v1/products/{sku}).
type ProductInput struct {
	SKU        string
	Name       string
	PriceMinor int64
	Currency   string
	// Stock is the new on-hand stock: units in the warehouse, the ones
	// reserved by CREATED orders included, sold ones excluded.
	Stock int64
}

// Product is a product with its stock counters.
type Product struct {
	SKU        string
	Name       string
	PriceMinor int64
	Currency   string
	// StockOnHand counts units in the warehouse, reserved ones included.
	StockOnHand int64
	// StockReserved is the part of StockOnHand held by CREATED orders.
	StockReserved int64
	// StockAvailable is StockOnHand − StockReserved: what a new order can take.
	StockAvailable int64
	// Sold counts units taken out by confirmed orders (and not returned by a
	// cancellation).
	Sold      int64
	CreatedAt time.Time
	UpdatedAt time.Time
}

func productFromRow(r db.Product) *Product {
	return &Product{
		SKU: r.Sku, Name: r.Name, PriceMinor: r.PriceMinor, Currency: r.Currency,
		StockOnHand: r.StockOnHand, StockReserved: r.StockReserved, StockAvailable: r.StockOnHand - r.StockReserved,
		Sold: r.Sold, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

// Validate checks a product's shape without touching the database.
func (in *ProductInput) Validate() error {
	if !skuRE.MatchString(in.SKU) {
		return invalid("sku %q must be 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-', starting with a letter or digit", in.SKU).WithDetail("field", "sku")
	}
	if err := text("name", in.Name, MaxNameLen); err != nil {
		return err
	}
	if in.PriceMinor < 1 || in.PriceMinor > MaxPriceMinor {
		return invalid("price_minor must be between 1 and %d", int64(MaxPriceMinor)).WithDetail("field", "price_minor")
	}
	if !currencyRE.MatchString(in.Currency) {
		return invalid("currency %q is not an ISO 4217 code (three capital letters)", in.Currency).WithDetail("field", "currency")
	}
	if in.Stock < 0 || in.Stock > MaxStock {
		return invalid("stock must be between 0 and %d", int64(MaxStock)).WithDetail("field", "stock")
	}
	return nil
}

// PutProduct creates a product or updates it, and returns it with whether
// it was created now.
//
// Stock is the new on-hand count (a stock take or a restock), so PUT is the
// only operation that changes on_hand + sold: it moves by (stock − old
// on_hand). Sold units and reservations are left alone, and a stock below
// what CREATED orders have reserved is refused with 409 conflict (naming the
// reserved count) rather than silently breaking those reservations.
//
// Any ISO 4217 currency works: an order payment posts to platform:cash and
// the merchant's payable in the order's currency, created on first use.
// Orders keep the unit price (and currency) they were created with; a
// price change affects new orders only.
func (s *Service) PutProduct(ctx context.Context, in ProductInput) (*Product, bool, error) {
	if err := in.Validate(); err != nil {
		return nil, false, err
	}
	var (
		out     *Product
		created bool
	)
	err := s.store.InTx(ctx, func(tx *db.Tx) error {
		// The new on-hand count replaces the true one: fold the
		// confirmations still pending (schema step 13) into the row first,
		// under the row lock the upsert then keeps. The confirmer's lock
		// first: confirmation batches add pending moves without locking the
		// product, so one committing between the fold and the upsert would
		// be in neither (the stock take would then lose its units). A batch
		// holds that lock to its commit and never waits for a product, so
		// this cannot deadlock; it pauses confirmation for one PUT.
		if err := tx.LockOrderConfirmer(ctx); err != nil {
			return fmt.Errorf("lock the order confirmer: %w", err)
		}
		if _, err := tx.FoldStockMoves(ctx, []string{in.SKU}); err != nil {
			return fmt.Errorf("fold stock moves of %s: %w", in.SKU, err)
		}
		row, err := tx.UpsertProduct(ctx, db.UpsertProductParams{Sku: in.SKU, Name: in.Name, PriceMinor: in.PriceMinor, Currency: in.Currency, StockOnHand: in.Stock})
		if db.IsNotFound(err) {
			// The row exists and is locked by the upsert; read why it refused.
			p, err := tx.GetProduct(ctx, in.SKU)
			if err != nil {
				return fmt.Errorf("read product %s: %w", in.SKU, err)
			}
			return riverbank.Errorf(riverbank.ECONFLICT, "stock %d of sku %s is below the %d units reserved by orders awaiting confirmation; set stock to at least %d", in.Stock, in.SKU, p.StockReserved, p.StockReserved).
				WithDetail("sku", in.SKU).WithDetail("stock_reserved", p.StockReserved)
		}
		if err != nil {
			return fmt.Errorf("upsert product %s: %w", in.SKU, err)
		}
		created = row.Inserted
		out = productFromRow(db.Product{
			Sku: row.Sku, Name: row.Name, PriceMinor: row.PriceMinor, Currency: row.Currency,
			StockOnHand: row.StockOnHand, StockReserved: row.StockReserved, Sold: row.Sold,
			CreatedAt: row.CreatedAt, UpdatedAt: row.UpdatedAt,
		})
		return events.AppendTx(ctx, tx, events.ProductStockSet, "product", out.SKU, out)
	})
	if err != nil {
		return nil, false, err
	}
	return out, created, nil
}

// GetProduct returns a product with its stock counters.
func (s *Service) GetProduct(ctx context.Context, sku string) (*Product, error) {
	if !skuRE.MatchString(sku) {
		return nil, invalid("sku %q is not a valid sku", sku).WithDetail("field", "sku")
	}
	r, err := s.store.Queries().GetProduct(ctx, sku)
	if db.IsNotFound(err) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "product %s not found", sku).WithDetail("sku", sku)
	}
	if err != nil {
		return nil, fmt.Errorf("get product: %w", err)
	}
	return productFromRow(db.Product(r)), nil
}
