// Package orders is riverbank's commerce back office (SPEC §3): products with
// on-hand, reserved and sold stock; orders created with their stock
// reservation and their River jobs in one transaction; and the order state
// machine that the API, the order.confirm and order.expire workers and the
// confirmation sweeper all go through.
//
// Stock never oversells: a reservation is a conditional UPDATE (available
// must cover the quantity at that instant) on product rows locked in sku
// order, backed by CHECK constraints; every transition that moves stock
// (confirm, cancel, expire) locks the order row first and then the order's
// product rows in sku order, so concurrent multi-item orders cannot
// deadlock. The batch confirmation is the exception: it locks no product;
// it adds its stock moves to per-product pending counts
// (product_stock_pending), folded into the product rows later, under those
// locks (schema step 13, docs/orders.md). The stock moves live in SQL
// functions (orders_reserve, orders_move_stock in schema.sql) because
// locking and updating must be separate statements; each business step is
// still one round trip.
//
// See docs/orders.md for the design notes.
package orders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/events"
	"riverbank/internal/ledger"
)

// Status is an order's state.
type Status string

// Order states. CREATED → CONFIRMED → PAID → SHIPPED → COMPLETED, and
// CREATED | CONFIRMED → CANCELLED.
const (
	StatusCreated   Status = "CREATED"
	StatusConfirmed Status = "CONFIRMED"
	StatusPaid      Status = "PAID"
	StatusShipped   Status = "SHIPPED"
	StatusCompleted Status = "COMPLETED"
	StatusCancelled Status = "CANCELLED"
)

// Statuses lists every status in lifecycle order.
var Statuses = []Status{StatusCreated, StatusConfirmed, StatusPaid, StatusShipped, StatusCompleted, StatusCancelled}

// ReasonPaymentTimeout is the cancel reason of an order the order.expire job
// cancelled because it was not paid in time.
const ReasonPaymentTimeout = "payment_timeout"

// Actors recorded on history events.
const (
	ActorAPI     = "api"
	ActorConfirm = "order.confirm"
	ActorExpire  = "order.expire"
)

// Limits of one order and one product. MaxTotalMinor is the ledger's
// largest posting amount, so every order total can be paid.
const (
	MaxItems       = 100
	MaxQuantity    = 1_000_000
	MaxPriceMinor  = 1_000_000_000_000_000 // 10^15
	MaxStock       = 1_000_000_000_000     // 10^12
	MaxTotalMinor  = ledger.MaxAmountMinor
	MaxIdentLen    = 128
	MaxNameLen     = 200
	MaxReasonLen   = 200
	MaxTrackingLen = 128
	MaxPaymentLen  = 128
)

// Patterns of identifiers. merchant_id is lower case because it names the
// ledger account merchant:{merchant_id}:payable.
var (
	skuRE      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)
	buyerRE    = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$`)
	merchantRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)
	currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)
)

// stockMove is what a transition does to the stock of each of the order's
// lines: every counter moves by its coefficient × the line's quantity.
type stockMove struct {
	onHand, reserved, sold int64
}

// The stock moves of SPEC §3. None of them changes on_hand + sold.
var (
	stockNone = stockMove{}
	// stockCommit: the reservation becomes sold (on_hand -= q, reserved -= q, sold += q).
	stockCommit = stockMove{onHand: -1, reserved: -1, sold: +1}
	// stockRelease: the reservation is given back (reserved -= q).
	stockRelease = stockMove{reserved: -1}
	// stockReturn: sold units go back on hand (on_hand += q, sold -= q).
	stockReturn = stockMove{onHand: +1, sold: -1}
)

// transitions is the one table of allowed moves and their stock effect.
// Every path — the API, the workers, the sweeper — goes through
// transitionTx, which consults it; anything not listed is
// invalid_transition.
var transitions = map[Status]map[Status]stockMove{
	StatusCreated:   {StatusConfirmed: stockCommit, StatusCancelled: stockRelease},
	StatusConfirmed: {StatusPaid: stockNone, StatusCancelled: stockReturn},
	StatusPaid:      {StatusShipped: stockNone},
	StatusShipped:   {StatusCompleted: stockNone},
}

// CanTransition reports whether the state machine allows from → to.
func CanTransition(from, to Status) bool {
	_, ok := transitions[from][to]
	return ok
}

// Unpaid reports whether an order in s still waits for its payment (and so
// may be cancelled or expire).
func (s Status) Unpaid() bool { return s == StatusCreated || s == StatusConfirmed }

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	_, ok := transitions[s]
	return ok || s == StatusCompleted || s == StatusCancelled
}

func invalidTransition(o *db.Order, to Status) error {
	return riverbank.Errorf(riverbank.EINVALIDTRANSITION, "order %d is %s and cannot become %s", o.ID, o.Status, to).
		WithDetail("order_id", o.ID).WithDetail("status", string(o.Status)).WithDetail("to", string(to))
}

// Options configure a Service.
type Options struct {
	// PaymentTimeout is how long an order may stay unpaid before order.expire
	// cancels it (RIVERBANK_ORDER_PAYMENT_TIMEOUT). Default 15m.
	PaymentTimeout time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Service implements products, orders and their transitions on a store.
type Service struct {
	store          *db.Store
	paymentTimeout time.Duration
	logger         *slog.Logger
}

// NewService returns an orders service on store.
func NewService(store *db.Store, opts Options) *Service {
	s := &Service{store: store, paymentTimeout: opts.PaymentTimeout, logger: opts.Logger}
	if s.paymentTimeout <= 0 {
		s.paymentTimeout = 15 * time.Minute
	}
	if s.logger == nil {
		s.logger = slog.Default()
	}
	return s
}

// Item is one line of an order, priced when the order was created.
type Item struct {
	SKU            string
	Quantity       int64
	UnitPriceMinor int64
	AmountMinor    int64
}

// Order is an order with its items.
type Order struct {
	ID            int64
	BuyerID       string
	MerchantID    string
	Identifier    string
	Status        Status
	Items         []Item
	TotalMinor    int64
	Currency      string
	CreatedAt     time.Time
	ExpiresAt     time.Time
	UpdatedAt     time.Time
	ConfirmedAt   *time.Time
	PaidAt        *time.Time
	ShippedAt     *time.Time
	CompletedAt   *time.Time
	CancelledAt   *time.Time
	CancelReason  *string
	PaymentID     *string
	LedgerEntryID *int64
	TrackingNo    *string
}

// Event is one entry of an order's history.
type Event struct {
	ID      int64
	OrderID int64
	// From is nil on the creation event.
	From      *Status
	To        Status
	Actor     string
	Detail    *string
	CreatedAt time.Time
}

func orderFromRow(r db.Order, items []db.OrderItem) *Order {
	o := &Order{
		ID: r.ID, BuyerID: r.BuyerID, MerchantID: r.MerchantID, Identifier: r.Identifier,
		Status: Status(r.Status), TotalMinor: r.TotalMinor, Currency: r.Currency,
		CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt, UpdatedAt: r.UpdatedAt,
		ConfirmedAt: r.ConfirmedAt, PaidAt: r.PaidAt, ShippedAt: r.ShippedAt, CompletedAt: r.CompletedAt,
		CancelledAt: r.CancelledAt, CancelReason: r.CancelReason, PaymentID: r.PaymentID,
		LedgerEntryID: r.LedgerEntryID, TrackingNo: r.TrackingNo,
		Items: make([]Item, len(items)),
	}
	for i, it := range items {
		o.Items[i] = Item{SKU: it.Sku, Quantity: it.Quantity, UnitPriceMinor: it.UnitPriceMinor, AmountMinor: it.AmountMinor}
	}
	return o
}

func invalid(format string, args ...any) *riverbank.Error {
	return riverbank.Errorf(riverbank.EINVALID, format, args...)
}

// text checks a free-text field: valid UTF-8 without control characters
// (Postgres rejects NUL, and nobody means a tab in a tracking number), of
// 1..max characters.
func text(field, v string, max int) error {
	n := utf8.RuneCountInString(v)
	if n < 1 || n > max {
		return invalid("%s is required (1..%d characters)", field, max).WithDetail("field", field)
	}
	// U+FFFD is what the JSON decoder makes of invalid UTF-8: two
	// different malformed keys would otherwise collapse into one.
	if !utf8.ValidString(v) || strings.ContainsRune(v, utf8.RuneError) {
		return invalid("%s is not valid UTF-8", field).WithDetail("field", field)
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return invalid("%s must not contain control characters", field).WithDetail("field", field)
		}
	}
	return nil
}

func notFound(id int64) error {
	return riverbank.Errorf(riverbank.ENOTFOUND, "order %d not found", id).WithDetail("order_id", id)
}

// lockOrder locks an order row for a transition.
func lockOrder(ctx context.Context, tx *db.Tx, id int64) (*db.Order, error) {
	o, err := tx.LockOrder(ctx, id)
	if db.IsNotFound(err) {
		return nil, notFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("lock order: %w", err)
	}
	return &o, nil
}

// facts are what a transition records besides the new status.
type facts struct {
	actor         string
	detail        *string
	paymentID     *string
	ledgerEntryID *int64
	trackingNo    *string
	cancelReason  *string
}

// transitionTx moves order o, read in the caller's transaction, to status
// to (see applyTransition). It returns nil, nil when the order was no
// longer in o.Status (a concurrent transition won); callers that hold the
// row lock (lockOrder) never see that.
func transitionTx(ctx context.Context, tx *db.Tx, o *db.Order, to Status, f facts) (*db.Order, error) {
	return applyTransition(ctx, tx, o, to, f)
}

// applyTransition checks the transition table and then, in one statement
// (ApplyTransition), updates the order guarded by its status o.Status,
// records the facts, appends the history event and moves the stock the
// transition implies, locking the order row and then its products in sku
// order; the statement fails unless every line's stock moved. It returns
// nil, nil when the order was no longer in o.Status.
func applyTransition(ctx context.Context, tx *db.Tx, o *db.Order, to Status, f facts) (*db.Order, error) {
	q := tx.Queries
	from := Status(o.Status)
	move, ok := transitions[from][to]
	if !ok {
		return nil, invalidTransition(o, to)
	}
	// The statement appends the transition's feed event too (its stored
	// row: schema step 10).
	typ := ""
	if events.On() {
		typ = eventOf[to]
	}
	row, err := q.ApplyTransition(ctx, db.ApplyTransitionParams{
		EventType: typ,
		OrderID:   o.ID, FromStatus: db.OrderStatus(from), ToStatus: db.OrderStatus(to),
		MoveStock: move != stockNone, DOnHand: move.onHand, DReserved: move.reserved, DSold: move.sold,
		Actor: f.actor, Detail: f.detail,
		PaymentID: f.paymentID, LedgerEntryID: f.ledgerEntryID, TrackingNo: f.trackingNo, CancelReason: f.cancelReason,
	})
	if db.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		if c, ok := db.ConstraintViolation(err); ok {
			// A CHECK fired: the stock counters disagree with the order.
			// Never paper over it.
			return nil, fmt.Errorf("transition order %d %s→%s: constraint %q violated: %w", o.ID, from, to, c, err)
		}
		return nil, fmt.Errorf("transition order %d %s→%s: %w", o.ID, from, to, err)
	}
	next := db.Order{
		ID: row.ID, BuyerID: row.BuyerID, MerchantID: row.MerchantID, Identifier: row.Identifier, RequestHash: row.RequestHash,
		Status: row.Status, TotalMinor: row.TotalMinor, Currency: row.Currency, CreatedAt: row.CreatedAt, ExpiresAt: row.ExpiresAt,
		UpdatedAt: row.UpdatedAt, ConfirmedAt: row.ConfirmedAt, PaidAt: row.PaidAt, ShippedAt: row.ShippedAt, CompletedAt: row.CompletedAt,
		CancelledAt: row.CancelledAt, CancelReason: row.CancelReason, PaymentID: row.PaymentID, LedgerEntryID: row.LedgerEntryID, TrackingNo: row.TrackingNo,
	}
	if typ != "" {
		events.Appended(tx)
	}
	return &next, nil
}

// eventOf names the event of a transition into each status.
var eventOf = map[Status]string{
	StatusConfirmed: events.OrderConfirmed,
	StatusPaid:      events.OrderPaid,
	StatusShipped:   events.OrderShipped,
	StatusCompleted: events.OrderCompleted,
	StatusCancelled: events.OrderCancelled,
}

// lockedTransitionTx is transitionTx for a caller holding o's row lock: the
// order cannot have moved on, so a missing row is a bug.
func lockedTransitionTx(ctx context.Context, tx *db.Tx, o *db.Order, to Status, f facts) (*db.Order, error) {
	next, err := transitionTx(ctx, tx, o, to, f)
	if err == nil && next == nil {
		return nil, fmt.Errorf("transition order %d %s→%s: order changed under its row lock", o.ID, o.Status, to)
	}
	return next, err
}

// storedOrder is an order as its feed events store it (data_kind
// order_row): to_jsonb of the orders row plus its items (queries/orders.sql
// InsertOrder and ApplyTransition).
type storedOrder struct {
	ID            int64      `json:"id"`
	BuyerID       string     `json:"buyer_id"`
	MerchantID    string     `json:"merchant_id"`
	Identifier    string     `json:"identifier"`
	Status        string     `json:"status"`
	TotalMinor    int64      `json:"total_minor"`
	Currency      string     `json:"currency"`
	CreatedAt     time.Time  `json:"created_at"`
	ExpiresAt     time.Time  `json:"expires_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	ConfirmedAt   *time.Time `json:"confirmed_at"`
	PaidAt        *time.Time `json:"paid_at"`
	ShippedAt     *time.Time `json:"shipped_at"`
	CompletedAt   *time.Time `json:"completed_at"`
	CancelledAt   *time.Time `json:"cancelled_at"`
	CancelReason  *string    `json:"cancel_reason"`
	PaymentID     *string    `json:"payment_id"`
	LedgerEntryID *int64     `json:"ledger_entry_id"`
	TrackingNo    *string    `json:"tracking_no"`
	Items         []struct {
		SKU            string `json:"sku"`
		Quantity       int64  `json:"quantity"`
		UnitPriceMinor int64  `json:"unit_price_minor"`
		AmountMinor    int64  `json:"amount_minor"`
	} `json:"items"`
}

// StoredKind is the data_kind of order events.
const StoredKind = "order_row"

// FromStored decodes the data of an order event stored as a row into the
// order as it was after the event's change. Times are in the process's
// local zone, as pgx returns them on every other read, so an event shows
// the same text as GET /v1/orders/{id} did at that moment.
func FromStored(data []byte) (*Order, error) {
	var r storedOrder
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode stored order: %w", err)
	}
	local := func(t *time.Time) *time.Time {
		if t == nil {
			return nil
		}
		l := t.Local()
		return &l
	}
	o := &Order{
		ID: r.ID, BuyerID: r.BuyerID, MerchantID: r.MerchantID, Identifier: r.Identifier,
		Status: Status(r.Status), TotalMinor: r.TotalMinor, Currency: r.Currency,
		CreatedAt: r.CreatedAt.Local(), ExpiresAt: r.ExpiresAt.Local(), UpdatedAt: r.UpdatedAt.Local(),
		ConfirmedAt: local(r.ConfirmedAt), PaidAt: local(r.PaidAt), ShippedAt: local(r.ShippedAt),
		CompletedAt: local(r.CompletedAt), CancelledAt: local(r.CancelledAt),
		CancelReason: r.CancelReason, PaymentID: r.PaymentID, LedgerEntryID: r.LedgerEntryID, TrackingNo: r.TrackingNo,
		Items: make([]Item, len(r.Items)),
	}
	for i, it := range r.Items {
		o.Items[i] = Item{SKU: it.SKU, Quantity: it.Quantity, UnitPriceMinor: it.UnitPriceMinor, AmountMinor: it.AmountMinor}
	}
	return o, nil
}

func loadOrder(ctx context.Context, q *db.Queries, r *db.Order) (*Order, error) {
	items, err := q.OrderItems(ctx, r.ID)
	if err != nil {
		return nil, fmt.Errorf("load items of order %d: %w", r.ID, err)
	}
	return orderFromRow(*r, items), nil
}

// Get returns an order with its items.
func (s *Service) Get(ctx context.Context, id int64) (*Order, error) {
	q := s.store.Queries()
	r, err := q.GetOrder(ctx, id)
	if db.IsNotFound(err) {
		return nil, notFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("get order: %w", err)
	}
	return loadOrder(ctx, q, &r)
}

// ListParams filter and page a list of orders, newest first.
type ListParams struct {
	// BuyerID, when set, lists only that buyer's orders.
	BuyerID string
	// Status, when set, lists only orders in that status.
	Status Status
	// BeforeID continues after the last order of the previous page (0: the
	// first page).
	BeforeID int64
	// Limit is the page size (1..500).
	Limit int
}

// List returns a page of orders, newest first.
func (s *Service) List(ctx context.Context, p ListParams) ([]*Order, error) {
	if p.BuyerID != "" && !buyerRE.MatchString(p.BuyerID) {
		return nil, invalid("buyer_id %q is not a valid buyer id", p.BuyerID).WithDetail("field", "buyer_id")
	}
	if p.Status != "" && !p.Status.Valid() {
		return nil, invalid("status %q is not an order status", p.Status).WithDetail("field", "status")
	}
	if p.Limit < 1 || p.Limit > 500 {
		return nil, invalid("limit must be between 1 and 500").WithDetail("field", "limit")
	}
	before := p.BeforeID
	if before <= 0 {
		before = 1<<63 - 1
	}
	q := s.store.Queries()
	var (
		rows []db.Order
		err  error
	)
	switch {
	case p.BuyerID != "":
		var st *db.OrderStatus
		if p.Status != "" {
			v := db.OrderStatus(p.Status)
			st = &v
		}
		rows, err = q.ListOrdersByBuyer(ctx, db.ListOrdersByBuyerParams{BuyerID: p.BuyerID, Status: st, BeforeID: before, Lim: int32(p.Limit)})
	case p.Status != "":
		rows, err = q.ListOrdersByStatus(ctx, db.ListOrdersByStatusParams{Status: db.OrderStatus(p.Status), BeforeID: before, Lim: int32(p.Limit)})
	default:
		rows, err = q.ListOrders(ctx, db.ListOrdersParams{BeforeID: before, Lim: int32(p.Limit)})
	}
	if err != nil {
		return nil, fmt.Errorf("list orders: %w", err)
	}
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	items, err := q.ItemsOfOrders(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("list items: %w", err)
	}
	byOrder := map[int64][]db.OrderItem{}
	for _, it := range items {
		byOrder[it.OrderID] = append(byOrder[it.OrderID], it)
	}
	out := make([]*Order, len(rows))
	for i, r := range rows {
		out[i] = orderFromRow(r, byOrder[r.ID])
	}
	return out, nil
}

// Events returns a page of an order's history, oldest first, after the
// event afterID (0: from the start).
func (s *Service) Events(ctx context.Context, orderID, afterID int64, limit int) ([]Event, error) {
	if limit < 1 || limit > 500 {
		return nil, invalid("limit must be between 1 and 500").WithDetail("field", "limit")
	}
	q := s.store.Queries()
	ok, err := q.OrderExists(ctx, orderID)
	if err != nil {
		return nil, fmt.Errorf("find order: %w", err)
	}
	if !ok {
		return nil, notFound(orderID)
	}
	rows, err := q.OrderEvents(ctx, db.OrderEventsParams{OrderID: orderID, AfterID: afterID, Lim: int32(limit)})
	if err != nil {
		return nil, fmt.Errorf("list order events: %w", err)
	}
	out := make([]Event, len(rows))
	for i, r := range rows {
		e := Event{ID: r.ID, OrderID: r.OrderID, To: Status(r.ToStatus), Actor: r.Actor, Detail: r.Detail, CreatedAt: r.CreatedAt}
		if r.FromStatus != nil {
			f := Status(*r.FromStatus)
			e.From = &f
		}
		out[i] = e
	}
	return out, nil
}

// errRetry marks a create attempt that lost a race it can simply run again.
var errRetry = errors.New("retry")
