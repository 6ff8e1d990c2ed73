package api

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"riverbank"
	"riverbank/internal/orders"
)

// OrderItemBody is one line of an order, priced at creation.
type OrderItemBody struct {
	SKU            string `json:"sku"`
	Quantity       int64  `json:"quantity"`
	UnitPriceMinor int64  `json:"unit_price_minor"`
	AmountMinor    int64  `json:"amount_minor" doc:"quantity × unit_price_minor."`
}

// OrderBody is an order as the API shows it. Transition timestamps and the
// facts recorded with them are null until the transition happens.
type OrderBody struct {
	ID            int64           `json:"id"`
	BuyerID       string          `json:"buyer_id"`
	MerchantID    string          `json:"merchant_id"`
	Identifier    string          `json:"identifier" doc:"The buyer's idempotency key."`
	Status        string          `json:"status" enum:"CREATED,CONFIRMED,PAID,SHIPPED,COMPLETED,CANCELLED"`
	Items         []OrderItemBody `json:"items"`
	TotalMinor    int64           `json:"total_minor"`
	Currency      string          `json:"currency"`
	CreatedAt     time.Time       `json:"created_at"`
	ExpiresAt     time.Time       `json:"expires_at" doc:"When an unpaid order is cancelled with reason payment_timeout (created_at + RIVERBANK_ORDER_PAYMENT_TIMEOUT)."`
	UpdatedAt     time.Time       `json:"updated_at"`
	ConfirmedAt   *time.Time      `json:"confirmed_at"`
	PaidAt        *time.Time      `json:"paid_at"`
	ShippedAt     *time.Time      `json:"shipped_at"`
	CompletedAt   *time.Time      `json:"completed_at"`
	CancelledAt   *time.Time      `json:"cancelled_at"`
	CancelReason  *string         `json:"cancel_reason" doc:"payment_timeout when the order expired."`
	PaymentID     *string         `json:"payment_id"`
	LedgerEntryID *int64          `json:"ledger_entry_id" doc:"The journal entry of the payment (debit platform:cash, credit merchant:{merchant_id}:payable)."`
	TrackingNo    *string         `json:"tracking_no"`
}

func orderBody(o *orders.Order) OrderBody {
	b := OrderBody{
		ID: o.ID, BuyerID: o.BuyerID, MerchantID: o.MerchantID, Identifier: o.Identifier, Status: string(o.Status),
		Items: make([]OrderItemBody, len(o.Items)), TotalMinor: o.TotalMinor, Currency: o.Currency,
		CreatedAt: o.CreatedAt, ExpiresAt: o.ExpiresAt, UpdatedAt: o.UpdatedAt,
		ConfirmedAt: o.ConfirmedAt, PaidAt: o.PaidAt, ShippedAt: o.ShippedAt, CompletedAt: o.CompletedAt, CancelledAt: o.CancelledAt,
		CancelReason: o.CancelReason, PaymentID: o.PaymentID, LedgerEntryID: o.LedgerEntryID, TrackingNo: o.TrackingNo,
	}
	for i, it := range o.Items {
		b.Items[i] = OrderItemBody(it)
	}
	return b
}

// OrderEventBody is one entry of an order's history.
type OrderEventBody struct {
	ID        int64     `json:"id"`
	OrderID   int64     `json:"order_id"`
	From      *string   `json:"from_status" doc:"null on the creation event."`
	To        string    `json:"to_status"`
	Actor     string    `json:"actor" doc:"api, order.confirm or order.expire."`
	Detail    *string   `json:"detail" doc:"The payment id, tracking number or cancel reason of the transition."`
	CreatedAt time.Time `json:"created_at"`
}

type createOrderInput struct {
	Body struct {
		BuyerID    string           `json:"buyer_id" pattern:"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$" maxLength:"64" example:"buyer-42"`
		MerchantID string           `json:"merchant_id" pattern:"^[a-z0-9][a-z0-9_.-]{0,63}$" maxLength:"64" doc:"Lower case: it names the ledger account merchant:{merchant_id}:payable." example:"m-7"`
		Identifier string           `json:"identifier" minLength:"1" maxLength:"128" doc:"The buyer's idempotency key: a repeat of the same request returns the original order (200); a different request with the same buyer_id and identifier is 409 idempotency_conflict." example:"cart-2024-0001"`
		Items      []OrderLineInput `json:"items" minItems:"1" maxItems:"100" doc:"One line per sku."`
	}
}

// OrderLineInput is one requested line of a new order.
type OrderLineInput struct {
	SKU      string `json:"sku" pattern:"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$" maxLength:"64"`
	Quantity int64  `json:"quantity" minimum:"1" maximum:"1000000"`
}

type orderOutput struct {
	Status int
	Body   OrderBody
}

type orderIDInput struct {
	ID int64 `path:"id" minimum:"1" doc:"Order id."`
}

type listOrdersInput struct {
	BuyerID string `query:"buyer_id" pattern:"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$" maxLength:"64" doc:"Only this buyer's orders."`
	Status  string `query:"status" enum:"CREATED,CONFIRMED,PAID,SHIPPED,COMPLETED,CANCELLED" doc:"Only orders in this status."`
	PageParams
}

type listOrdersOutput struct {
	Body struct {
		Orders     []OrderBody `json:"orders" doc:"Newest first."`
		NextCursor string      `json:"next_cursor,omitempty"`
	}
}

type orderEventsInput struct {
	ID int64 `path:"id" minimum:"1"`
	PageParams
}

type orderEventsOutput struct {
	Body struct {
		Events     []OrderEventBody `json:"events" doc:"Oldest first."`
		NextCursor string           `json:"next_cursor,omitempty"`
	}
}

type payOrderInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		PaymentID   string `json:"payment_id" minLength:"1" maxLength:"128" doc:"Identifies the payment; repeating it is idempotent." example:"pay-9f3e"`
		AmountMinor int64  `json:"amount_minor" doc:"Must equal the order's total_minor (else 422)."`
	}
}

type shipOrderInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		TrackingNo string `json:"tracking_no" minLength:"1" maxLength:"128" example:"SF1234567890"`
	}
}

type cancelOrderInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		Reason string `json:"reason" minLength:"1" maxLength:"200" example:"buyer changed their mind"`
	}
}

func (h *handlers) registerOrders(api huma.API) {
	tags := []string{"Orders"}
	transition := answers(codes(riverbank.ENOTFOUND, riverbank.EINVALIDTRANSITION), nil)
	huma.Register(api, huma.Operation{OperationID: "create-order", Method: http.MethodPost, Path: "/v1/orders", Summary: "Place an order", Tags: tags,
		Description: "In one transaction: claims (buyer_id, identifier), reserves stock for every line with a conditional update that cannot oversell, " +
			"inserts the order, its items and its CREATED event, and asks for the order confirmer (one job confirms waiting orders in batches; unpaid orders expire by a sweep over expires_at). " +
			"A shortage on any line writes nothing and is 409 insufficient_stock naming the sku; an unknown sku is 422 unprocessable. " +
			"201 with the order; 200 with the original order for a repeat of the same request.",
		DefaultStatus: http.StatusCreated,
		Metadata: answers(codes(riverbank.EINSUFFICIENTSTOCK, riverbank.EIDEMPOTENCYCONFLICT, riverbank.ECONFLICT, riverbank.EUNPROCESSABLE),
			replayOK("the original order as it is now"))}, h.createOrder)
	huma.Register(api, huma.Operation{OperationID: "list-orders", Method: http.MethodGet, Path: "/v1/orders", Summary: "List orders, newest first", Tags: tags}, h.listOrders)
	huma.Register(api, huma.Operation{OperationID: "get-order", Method: http.MethodGet, Path: "/v1/orders/{id}", Summary: "Get an order", Tags: tags,
		Metadata: answers(codes(riverbank.ENOTFOUND), nil)}, h.getOrder)
	huma.Register(api, huma.Operation{OperationID: "list-order-events", Method: http.MethodGet, Path: "/v1/orders/{id}/events", Summary: "An order's history, oldest first", Tags: tags,
		Metadata: answers(codes(riverbank.ENOTFOUND), nil)}, h.listOrderEvents)
	huma.Register(api, huma.Operation{OperationID: "pay-order", Method: http.MethodPost, Path: "/v1/orders/{id}/pay", Summary: "Record the payment of an order", Tags: tags,
		Description: "Allowed from CREATED (confirmed inline in the same transaction) or CONFIRMED. amount_minor must equal total_minor (else 422). " +
			"Writes the journal entry (debit platform:cash, credit merchant:{merchant_id}:payable) in the same transaction. " +
			"Repeating the payment_id the order was paid with returns the order (200); any other payment of a paid order is 409 invalid_transition.",
		Metadata: answers(codes(riverbank.ENOTFOUND, riverbank.EINVALIDTRANSITION, riverbank.EIDEMPOTENCYCONFLICT, riverbank.EUNPROCESSABLE, riverbank.EBALANCEOUTOFRANGE), nil)}, h.payOrder)
	huma.Register(api, huma.Operation{OperationID: "ship-order", Method: http.MethodPost, Path: "/v1/orders/{id}/ship", Summary: "Ship a paid order", Tags: tags,
		Metadata: transition}, h.shipOrder)
	huma.Register(api, huma.Operation{OperationID: "receive-order", Method: http.MethodPost, Path: "/v1/orders/{id}/receive", Summary: "Confirm receipt of a shipped order (COMPLETED)", Tags: tags,
		Metadata: transition}, h.receiveOrder)
	huma.Register(api, huma.Operation{OperationID: "cancel-order", Method: http.MethodPost, Path: "/v1/orders/{id}/cancel", Summary: "Cancel an unpaid order and release its stock", Tags: tags,
		Description: "Allowed from CREATED (the reservation is released) or CONFIRMED (sold units return to on-hand); otherwise 409 invalid_transition.",
		Metadata:    transition}, h.cancelOrder)
}

func (h *handlers) createOrder(ctx context.Context, in *createOrderInput) (*orderOutput, error) {
	cin := orders.CreateInput{BuyerID: in.Body.BuyerID, MerchantID: in.Body.MerchantID, Identifier: in.Body.Identifier,
		Items: make([]orders.ItemInput, len(in.Body.Items))}
	for i, it := range in.Body.Items {
		cin.Items[i] = orders.ItemInput{SKU: it.SKU, Quantity: it.Quantity}
	}
	o, created, err := h.Orders.Create(ctx, cin)
	if err != nil {
		return nil, err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return &orderOutput{Status: status, Body: orderBody(o)}, nil
}

func (h *handlers) getOrder(ctx context.Context, in *orderIDInput) (*orderOutput, error) {
	o, err := h.Orders.Get(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &orderOutput{Status: http.StatusOK, Body: orderBody(o)}, nil
}

func (h *handlers) listOrders(ctx context.Context, in *listOrdersInput) (*listOrdersOutput, error) {
	var before int64
	if in.Cursor != "" {
		var err error
		if before, err = decodeIDCursor(in.Cursor); err != nil {
			return nil, err
		}
	}
	limit := in.limit()
	os, err := h.Orders.List(ctx, orders.ListParams{BuyerID: in.BuyerID, Status: orders.Status(in.Status), BeforeID: before, Limit: limit})
	if err != nil {
		return nil, err
	}
	out := &listOrdersOutput{}
	out.Body.Orders = make([]OrderBody, len(os))
	for i, o := range os {
		out.Body.Orders[i] = orderBody(o)
	}
	if len(os) == limit {
		out.Body.NextCursor = encodeIDCursor(os[len(os)-1].ID)
	}
	return out, nil
}

func (h *handlers) listOrderEvents(ctx context.Context, in *orderEventsInput) (*orderEventsOutput, error) {
	var after int64
	if in.Cursor != "" {
		var err error
		if after, err = decodeIDCursor(in.Cursor); err != nil {
			return nil, err
		}
	}
	limit := in.limit()
	evs, err := h.Orders.Events(ctx, in.ID, after, limit)
	if err != nil {
		return nil, err
	}
	out := &orderEventsOutput{}
	out.Body.Events = make([]OrderEventBody, len(evs))
	for i, e := range evs {
		b := OrderEventBody{ID: e.ID, OrderID: e.OrderID, To: string(e.To), Actor: e.Actor, Detail: e.Detail, CreatedAt: e.CreatedAt}
		if e.From != nil {
			f := string(*e.From)
			b.From = &f
		}
		out.Body.Events[i] = b
	}
	if len(evs) == limit {
		out.Body.NextCursor = encodeIDCursor(evs[len(evs)-1].ID)
	}
	return out, nil
}

func (h *handlers) payOrder(ctx context.Context, in *payOrderInput) (*orderOutput, error) {
	o, _, err := h.Orders.Pay(ctx, in.ID, orders.PayInput{PaymentID: in.Body.PaymentID, AmountMinor: in.Body.AmountMinor})
	if err != nil {
		return nil, err
	}
	return &orderOutput{Status: http.StatusOK, Body: orderBody(o)}, nil
}

func (h *handlers) shipOrder(ctx context.Context, in *shipOrderInput) (*orderOutput, error) {
	o, err := h.Orders.Ship(ctx, in.ID, in.Body.TrackingNo)
	if err != nil {
		return nil, err
	}
	return &orderOutput{Status: http.StatusOK, Body: orderBody(o)}, nil
}

func (h *handlers) receiveOrder(ctx context.Context, in *orderIDInput) (*orderOutput, error) {
	o, err := h.Orders.Receive(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &orderOutput{Status: http.StatusOK, Body: orderBody(o)}, nil
}

func (h *handlers) cancelOrder(ctx context.Context, in *cancelOrderInput) (*orderOutput, error) {
	o, err := h.Orders.Cancel(ctx, in.ID, in.Body.Reason)
	if err != nil {
		return nil, err
	}
	return &orderOutput{Status: http.StatusOK, Body: orderBody(o)}, nil
}
