package api_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/api"
)

func TestProductsAPI(t *testing.T) {
	t.Parallel()
	b := setupOrdersAPI(t)
	sku := b.sku("TEA")

	rec := b.api.Put("/v1/products/"+sku, map[string]any{"name": "Tea", "price_minor": 1200, "currency": "CNY", "stock": 10})
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	p := decodeOrdersJSON[api.ProductBody](t, rec)
	require.Equal(t, api.ProductBody{SKU: sku, Name: "Tea", PriceMinor: 1200, Currency: "CNY", StockOnHand: 10, StockAvailable: 10, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}, p)

	rec = b.api.Put("/v1/products/"+sku, map[string]any{"name": "Tea", "price_minor": 1300, "currency": "CNY", "stock": 12})
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())

	rec = b.api.Get("/v1/products/" + sku)
	require.Equal(t, http.StatusOK, rec.Code)
	p = decodeOrdersJSON[api.ProductBody](t, rec)
	require.EqualValues(t, 1300, p.PriceMinor)
	require.EqualValues(t, 12, p.StockAvailable)
	// The wire format is snake_case with every stock field.
	for _, f := range []string{`"stock_on_hand":12`, `"stock_reserved":0`, `"stock_available":12`, `"sold":0`, `"price_minor":1300`} {
		require.Contains(t, rec.Body.String(), f)
	}

	requireOrdersProblem(t, b.api.Get("/v1/products/"+b.sku("NOPE")), http.StatusNotFound, "not_found")

	// Reserve 8, then try to set stock below it.
	b.createOrder(t, b.buyer("b1"), "c1", sku, 8)
	prob := requireOrdersProblem(t, b.api.Put("/v1/products/"+sku, map[string]any{"name": "Tea", "price_minor": 1300, "currency": "CNY", "stock": 7}),
		http.StatusConflict, "conflict")
	require.Contains(t, prob.Detail, "reserved")
	require.EqualValues(t, 8, prob.Details["stock_reserved"])

	before := b.writes(t)
	for name, tc := range map[string]struct {
		path   string
		body   any
		status int
		code   string
	}{
		"NotACurrency":  {"/v1/products/" + b.sku("X"), map[string]any{"name": "x", "price_minor": 1, "currency": "US", "stock": 1}, 422, "validation_failed"},
		"LowerCurrency": {"/v1/products/" + b.sku("X"), map[string]any{"name": "x", "price_minor": 1, "currency": "cny", "stock": 1}, 422, "validation_failed"},
		"NegativeStock": {"/v1/products/" + b.sku("X"), map[string]any{"name": "x", "price_minor": 1, "currency": "CNY", "stock": -1}, 422, "validation_failed"},
		"ZeroPrice":     {"/v1/products/" + b.sku("X"), map[string]any{"name": "x", "price_minor": 0, "currency": "CNY", "stock": 1}, 422, "validation_failed"},
		"EmptyName":     {"/v1/products/" + b.sku("X"), map[string]any{"name": "", "price_minor": 1, "currency": "CNY", "stock": 1}, 422, "validation_failed"},
		"MissingStock":  {"/v1/products/" + b.sku("X"), map[string]any{"name": "x", "price_minor": 1, "currency": "CNY"}, 422, "validation_failed"},
		"BadSKU":        {"/v1/products/-bad", map[string]any{"name": "x", "price_minor": 1, "currency": "CNY", "stock": 1}, 422, "validation_failed"},
		"StockAsString": {"/v1/products/" + b.sku("X"), map[string]any{"name": "x", "price_minor": 1, "currency": "CNY", "stock": "5"}, 422, "validation_failed"},
	} {
		rec := b.api.Put(tc.path, tc.body)
		requireOrdersProblem(t, rec, tc.status, tc.code)
		_ = name
	}
	rec = b.api.Put("/v1/products/"+b.sku("X"), "Content-Type: application/json", strings.NewReader(`{"name": "x",`))
	require.Contains(t, []int{400, 422}, rec.Code)
	requireOrdersProblem(t, rec, rec.Code, "validation_failed")
	require.Equal(t, before, b.writes(t))
}

func TestOrdersAPILifecycle(t *testing.T) {
	t.Parallel()
	b := setupOrdersAPI(t)
	sku := b.sku("A")
	b.product(t, sku, 1250, 10)
	buyer := b.buyer("b")

	o := b.createOrder(t, buyer, "cart-1", sku, 2)
	require.Equal(t, "CREATED", o.Status)
	require.EqualValues(t, 2500, o.TotalMinor)
	require.Equal(t, "CNY", o.Currency)
	require.Equal(t, []api.OrderItemBody{{SKU: sku, Quantity: 2, UnitPriceMinor: 1250, AmountMinor: 2500}}, o.Items)
	require.Equal(t, o.CreatedAt.Add(15*time.Minute), o.ExpiresAt)

	// Idempotency: the same request → 200 with the same order; another → 409.
	rec := b.api.Post("/v1/orders", orderRequest(buyer, "cart-1", sku, 2))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, o.ID, decodeOrdersJSON[api.OrderBody](t, rec).ID)
	prob := requireOrdersProblem(t, b.api.Post("/v1/orders", orderRequest(buyer, "cart-1", sku, 3)), http.StatusConflict, "idempotency_conflict")
	require.EqualValues(t, o.ID, prob.Details["order_id"])

	// Every field is present; unset transition facts are null.
	rec = b.api.Get(fmt.Sprintf("/v1/orders/%d", o.ID))
	require.Equal(t, http.StatusOK, rec.Code)
	for _, f := range []string{"id", "buyer_id", "merchant_id", "status", "items", "total_minor", "currency", "created_at", "expires_at",
		"confirmed_at", "paid_at", "shipped_at", "completed_at", "cancelled_at", "cancel_reason", "payment_id", "ledger_entry_id", "tracking_no"} {
		require.Contains(t, rec.Body.String(), `"`+f+`":`)
	}
	require.Contains(t, rec.Body.String(), `"cancel_reason":null`)

	path := fmt.Sprintf("/v1/orders/%d", o.ID)
	// Transitions that are not allowed yet.
	requireOrdersProblem(t, b.api.Post(path+"/ship", map[string]any{"tracking_no": "SF1"}), http.StatusConflict, "invalid_transition")
	requireOrdersProblem(t, b.api.Post(path+"/receive"), http.StatusConflict, "invalid_transition")

	// Pay: the wrong amount is 422 and changes nothing.
	before := b.writes(t)
	prob = requireOrdersProblem(t, b.api.Post(path+"/pay", map[string]any{"payment_id": "pay-" + b.suffix, "amount_minor": 2499}), http.StatusUnprocessableEntity, "unprocessable")
	require.EqualValues(t, 2500, prob.Details["total_minor"])
	require.Equal(t, before, b.writes(t))

	rec = b.api.Post(path+"/pay", map[string]any{"payment_id": "pay-" + b.suffix, "amount_minor": 2500})
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	paid := decodeOrdersJSON[api.OrderBody](t, rec)
	require.Equal(t, "PAID", paid.Status)
	require.NotNil(t, paid.ConfirmedAt)
	require.NotNil(t, paid.PaidAt)
	require.NotNil(t, paid.LedgerEntryID)
	rec = b.api.Post(path+"/pay", map[string]any{"payment_id": "pay-" + b.suffix, "amount_minor": 2500})
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, paid.LedgerEntryID, decodeOrdersJSON[api.OrderBody](t, rec).LedgerEntryID)
	requireOrdersProblem(t, b.api.Post(path+"/cancel", map[string]any{"reason": "too late"}), http.StatusConflict, "invalid_transition")

	rec = b.api.Post(path+"/ship", map[string]any{"tracking_no": "SF1"})
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, "SF1", *decodeOrdersJSON[api.OrderBody](t, rec).TrackingNo)
	rec = b.api.Post(path + "/receive")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	done := decodeOrdersJSON[api.OrderBody](t, rec)
	require.Equal(t, "COMPLETED", done.Status)
	require.NotNil(t, done.CompletedAt)

	rec = b.api.Get(path + "/events")
	require.Equal(t, http.StatusOK, rec.Code)
	evs := decodeOrdersJSON[struct {
		Events     []api.OrderEventBody `json:"events"`
		NextCursor string               `json:"next_cursor"`
	}](t, rec)
	var trail []string
	for _, e := range evs.Events {
		from := "-"
		if e.From != nil {
			from = *e.From
		}
		trail = append(trail, from+">"+e.To)
	}
	require.Equal(t, []string{"->CREATED", "CREATED>CONFIRMED", "CONFIRMED>PAID", "PAID>SHIPPED", "SHIPPED>COMPLETED"}, trail)
	require.Empty(t, evs.NextCursor)

	// Cancel of another order gives back its reservation.
	c := b.createOrder(t, buyer, "cart-2", sku, 3)
	rec = b.api.Post(fmt.Sprintf("/v1/orders/%d/cancel", c.ID), map[string]any{"reason": "changed my mind"})
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	cancelled := decodeOrdersJSON[api.OrderBody](t, rec)
	require.Equal(t, "CANCELLED", cancelled.Status)
	require.Equal(t, "changed my mind", *cancelled.CancelReason)
	p := decodeOrdersJSON[api.ProductBody](t, b.api.Get("/v1/products/"+sku))
	require.Equal(t, api.ProductBody{SKU: sku, Name: p.Name, PriceMinor: 1250, Currency: "CNY", StockOnHand: 8, StockReserved: 0, StockAvailable: 8, Sold: 2, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}, p)
}

func TestOrdersAPIBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	b := setupOrdersAPI(t)
	sku, short := b.sku("A"), b.sku("S")
	b.product(t, sku, 100, 50)
	b.product(t, short, 100, 1)
	buyer := b.buyer("b")
	o := b.createOrder(t, buyer, "ok", sku, 1)
	path := fmt.Sprintf("/v1/orders/%d", o.ID)
	items := func(lines ...map[string]any) map[string]any {
		return map[string]any{"buyer_id": buyer, "merchant_id": "shop-1", "identifier": "bad", "items": lines}
	}
	line := func(s string, q any) map[string]any { return map[string]any{"sku": s, "quantity": q} }

	tests := []struct {
		name, method, path string
		body               any
		status             int
		code               string
	}{
		{"EmptyItems", "POST", "/v1/orders", items(), 422, "validation_failed"},
		{"NullItems", "POST", "/v1/orders", map[string]any{"buyer_id": buyer, "merchant_id": "shop-1", "identifier": "bad", "items": nil}, 422, "validation_failed"},
		{"ZeroQuantity", "POST", "/v1/orders", items(line(sku, 0)), 422, "validation_failed"},
		{"NegativeQuantity", "POST", "/v1/orders", items(line(sku, -1)), 422, "validation_failed"},
		{"HugeQuantity", "POST", "/v1/orders", items(line(sku, int64(1)<<40)), 422, "validation_failed"},
		{"FractionalQuantity", "POST", "/v1/orders", items(line(sku, 1.5)), 422, "validation_failed"},
		{"OverflowingQuantity", "POST", "/v1/orders", items(line(sku, 1e30)), 422, "validation_failed"},
		{"QuantityAsString", "POST", "/v1/orders", items(line(sku, "2")), 422, "validation_failed"},
		{"UnknownField", "POST", "/v1/orders", map[string]any{"buyer_id": buyer, "merchant_id": "shop-1", "identifier": "bad", "items": []any{line(sku, 1)}, "discount": 5}, 422, "validation_failed"},
		{"TooManyLines", "POST", "/v1/orders", items(func() []map[string]any {
			var ls []map[string]any
			for i := range 101 {
				ls = append(ls, line(fmt.Sprintf("S%d", i), 1))
			}
			return ls
		}()...), 422, "validation_failed"},
		{"UnknownSKU", "POST", "/v1/orders", items(line(b.sku("NOPE"), 1)), 422, "unprocessable"},
		{"DuplicateSKULines", "POST", "/v1/orders", items(line(sku, 1), line(sku, 2)), 422, "validation_failed"},
		{"InsufficientStock", "POST", "/v1/orders", items(line(sku, 1), line(short, 2)), 409, "insufficient_stock"},
		{"MissingBuyer", "POST", "/v1/orders", map[string]any{"merchant_id": "shop-1", "identifier": "bad", "items": []any{line(sku, 1)}}, 422, "validation_failed"},
		{"UpperCaseMerchant", "POST", "/v1/orders", map[string]any{"buyer_id": buyer, "merchant_id": "Shop", "identifier": "bad", "items": []any{line(sku, 1)}}, 422, "validation_failed"},
		{"EmptyIdentifier", "POST", "/v1/orders", map[string]any{"buyer_id": buyer, "merchant_id": "shop-1", "identifier": "", "items": []any{line(sku, 1)}}, 422, "validation_failed"},
		{"ControlInIdentifier", "POST", "/v1/orders", map[string]any{"buyer_id": buyer, "merchant_id": "shop-1", "identifier": "a\u0000b", "items": []any{line(sku, 1)}}, 422, "validation_failed"},
		{"WrongAmount", "POST", path + "/pay", map[string]any{"payment_id": "p1", "amount_minor": 99}, 422, "unprocessable"},
		{"NegativeAmount", "POST", path + "/pay", map[string]any{"payment_id": "p1", "amount_minor": -100}, 422, "unprocessable"},
		{"MissingAmount", "POST", path + "/pay", map[string]any{"payment_id": "p1"}, 422, "validation_failed"},
		{"EmptyPaymentID", "POST", path + "/pay", map[string]any{"payment_id": "", "amount_minor": 100}, 422, "validation_failed"},
		{"PayUnknownOrder", "POST", "/v1/orders/999999999999/pay", map[string]any{"payment_id": "p1", "amount_minor": 100}, 404, "not_found"},
		{"PayNonNumericID", "POST", "/v1/orders/abc/pay", map[string]any{"payment_id": "p1", "amount_minor": 100}, 422, "validation_failed"},
		{"ShipUnpaid", "POST", path + "/ship", map[string]any{"tracking_no": "T"}, 409, "invalid_transition"},
		{"ShipEmptyTracking", "POST", path + "/ship", map[string]any{"tracking_no": ""}, 422, "validation_failed"},
		{"ReceiveUnshipped", "POST", path + "/receive", nil, 409, "invalid_transition"},
		{"CancelNoReason", "POST", path + "/cancel", map[string]any{}, 422, "validation_failed"},
		{"CancelLongReason", "POST", path + "/cancel", map[string]any{"reason": strings.Repeat("x", 201)}, 422, "validation_failed"},
		{"CancelUnknown", "POST", "/v1/orders/999999999999/cancel", map[string]any{"reason": "x"}, 404, "not_found"},
		{"GetUnknown", "GET", "/v1/orders/999999999999", nil, 404, "not_found"},
		{"GetZeroID", "GET", "/v1/orders/0", nil, 422, "validation_failed"},
		{"EventsUnknown", "GET", "/v1/orders/999999999999/events", nil, 404, "not_found"},
		{"ListBadStatus", "GET", "/v1/orders?status=LOST", nil, 422, "validation_failed"},
		{"ListBadLimit", "GET", "/v1/orders?limit=501", nil, 422, "validation_failed"},
		{"ListBadCursor", "GET", "/v1/orders?cursor=%21%21", nil, 422, "validation_failed"},
		{"EventsBadCursor", "GET", path + "/events?cursor=bm9wZQ", nil, 422, "validation_failed"},
	}
	before := b.writes(t)
	for _, tt := range tests {
		var args []any
		if tt.body != nil {
			args = append(args, tt.body)
		}
		rec := b.api.Do(tt.method, tt.path, args...)
		t.Logf("%s → %d", tt.name, rec.Code)
		requireOrdersProblem(t, rec, tt.status, tt.code)
		require.Equal(t, before, b.writes(t), tt.name)
	}

	// Malformed JSON bodies.
	for _, p := range []string{"/v1/orders", path + "/pay", path + "/cancel"} {
		rec := b.api.Post(p, "Content-Type: application/json", strings.NewReader(`{"items": [`))
		require.Contains(t, []int{400, 422}, rec.Code, rec.Body.String())
		requireOrdersProblem(t, rec, rec.Code, "validation_failed")
	}
	require.Equal(t, before, b.writes(t))

	// The shortage names the sku.
	prob := requireOrdersProblem(t, b.api.Post("/v1/orders", items(line(short, 2))), 409, "insufficient_stock")
	require.Equal(t, short, prob.Details["sku"])
	require.Contains(t, prob.Detail, short)
}

func TestOrdersAPIList(t *testing.T) {
	t.Parallel()
	b := setupOrdersAPI(t)
	sku := b.sku("L")
	b.product(t, sku, 100, 100)
	buyer := b.buyer("lister")
	var ids []int64
	for i := range 5 {
		ids = append(ids, b.createOrder(t, buyer, fmt.Sprintf("c%d", i), sku, 1).ID)
	}
	b.createOrder(t, b.buyer("other"), "c0", sku, 1)
	rec := b.api.Post(fmt.Sprintf("/v1/orders/%d/cancel", ids[2]), map[string]any{"reason": "x"})
	require.Equal(t, http.StatusOK, rec.Code)

	type page struct {
		Orders     []api.OrderBody `json:"orders"`
		NextCursor string          `json:"next_cursor"`
	}
	var got []int64
	url := "/v1/orders?limit=2&buyer_id=" + buyer
	for range 10 {
		rec := b.api.Get(url)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		p := decodeOrdersJSON[page](t, rec)
		for _, o := range p.Orders {
			require.Equal(t, buyer, o.BuyerID)
			require.Len(t, o.Items, 1)
			got = append(got, o.ID)
		}
		if p.NextCursor == "" {
			break
		}
		url = "/v1/orders?limit=2&buyer_id=" + buyer + "&cursor=" + p.NextCursor
	}
	require.Equal(t, []int64{ids[4], ids[3], ids[2], ids[1], ids[0]}, got)

	rec = b.api.Get("/v1/orders?status=CANCELLED&buyer_id=" + buyer)
	require.Equal(t, http.StatusOK, rec.Code)
	p := decodeOrdersJSON[page](t, rec)
	require.Len(t, p.Orders, 1)
	require.Equal(t, ids[2], p.Orders[0].ID)
	require.Empty(t, p.NextCursor)
	require.NotContains(t, rec.Body.String(), "next_cursor")
}
