package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/api"
	"riverbank/internal/events"
	"riverbank/internal/testkit"
)

type eventsPage struct {
	Events     []api.EventBody `json:"events"`
	NextCursor string          `json:"next_cursor"`
}

// TestEventsAPIDataIsTheResource: an event's data is the resource exactly
// as GET returns it after the change, and the feed pages by cursor.
func TestEventsAPIDataIsTheResource(t *testing.T) {
	t.Parallel()
	k := testkit.DB(t, testkit.DBOptions{})
	tapi := k.API(t)
	sku := k.ID("EV")
	rec := tapi.Put("/v1/products/"+sku, map[string]any{"name": "Tea", "price_minor": 100, "currency": "EUR", "stock": 5})
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	rec = tapi.Post("/v1/orders", map[string]any{"buyer_id": k.ID("b"), "merchant_id": "shop", "identifier": "o1", "items": []map[string]any{{"sku": sku, "quantity": 2}}})
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	order := testkit.DecodeJSON[api.OrderBody](t, rec)

	// Read the order's events (long-polling: another test's open write
	// transaction may hold the feed back a moment).
	var page eventsPage
	testkit.WaitFor(t, 90*time.Second, "order.created in the feed", func() bool {
		rec := tapi.Get(fmt.Sprintf("/v1/events?subject_id=%d&wait=1", order.ID))
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		page = testkit.DecodeJSON[eventsPage](t, rec)
		return len(page.Events) > 0
	})
	ev := page.Events[0]
	require.Equal(t, events.OrderCreated, ev.Type)
	require.Equal(t, "order", ev.SubjectType)
	var data, got map[string]any
	require.NoError(t, json.Unmarshal(ev.Data, &data))
	rec = tapi.Get(fmt.Sprintf("/v1/orders/%d", order.ID))
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
	require.Equal(t, got, data, "event data is the order as GET returns it")

	// A payment of the CREATED order confirms it inline and pays it, in one
	// transaction: two events, each the order as it was after its change
	// (the stored-row events of schema step 10, rendered on read).
	rec = tapi.Post(fmt.Sprintf("/v1/orders/%d/pay", order.ID), map[string]any{"payment_id": k.ID("pay"), "amount_minor": 200})
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var paidGet map[string]any
	rec = tapi.Get(fmt.Sprintf("/v1/orders/%d", order.ID))
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &paidGet))
	testkit.WaitFor(t, 90*time.Second, "order.confirmed and order.paid in the feed", func() bool {
		rec := tapi.Get(fmt.Sprintf("/v1/events?subject_id=%d&wait=1", order.ID))
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		page = testkit.DecodeJSON[eventsPage](t, rec)
		return len(page.Events) >= 4
	})
	var ofOrder []api.EventBody // subject_id 1 may also be the payment's journal entry
	for _, e := range page.Events {
		if e.SubjectType == "order" {
			ofOrder = append(ofOrder, e)
		}
	}
	require.Len(t, ofOrder, 3)
	require.Equal(t, events.OrderConfirmed, ofOrder[1].Type)
	require.Equal(t, events.OrderPaid, ofOrder[2].Type)
	var confirmed, paid map[string]any
	require.NoError(t, json.Unmarshal(ofOrder[1].Data, &confirmed))
	require.NoError(t, json.Unmarshal(ofOrder[2].Data, &paid))
	require.Equal(t, paidGet, paid, "order.paid data is the order as GET returns it after the payment")
	require.Equal(t, "CONFIRMED", confirmed["status"])
	require.Equal(t, paidGet["confirmed_at"], confirmed["confirmed_at"])
	require.Nil(t, confirmed["paid_at"])
	require.Nil(t, confirmed["payment_id"])
	require.Equal(t, paidGet["items"], confirmed["items"])

	// The product's stock_set came first, in another transaction.
	var all []api.EventBody
	cursor := ""
	testkit.WaitFor(t, 90*time.Second, "both events", func() bool {
		rec := tapi.Get("/v1/events?limit=1&wait=1&after=" + cursor)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		p := testkit.DecodeJSON[eventsPage](t, rec)
		all = append(all, p.Events...)
		if p.NextCursor != "" {
			cursor = p.NextCursor
		}
		return len(all) >= 2
	})
	require.Equal(t, events.ProductStockSet, all[0].Type)
	require.Equal(t, events.OrderCreated, all[1].Type)
	require.Less(t, all[0].ID, all[1].ID)
}

func TestEventsAPIRejectsBadInput(t *testing.T) {
	t.Parallel()
	k := testkit.DB(t, testkit.DBOptions{})
	tapi := k.API(t)
	old := events.Cursor{TxID: 5, ID: 5, OccurredAt: time.Now().Add(-31 * 24 * time.Hour)}.Encode()
	for name, tc := range map[string]struct {
		path   string
		status int
		code   string
	}{
		"WaitBeyond30s":    {"/v1/events?wait=31", 422, "validation_failed"},
		"WaitAsDuration":   {"/v1/events?wait=1m", 422, "validation_failed"},
		"WaitNotANumber":   {"/v1/events?wait=soon", 422, "validation_failed"},
		"NegativeWait":     {"/v1/events?wait=-1", 422, "validation_failed"},
		"MalformedCursor":  {"/v1/events?after=not-a-cursor", 422, "validation_failed"},
		"UnknownType":      {"/v1/events?type=order.exploded", 422, "validation_failed"},
		"LimitTooLarge":    {"/v1/events?limit=501", 422, "validation_failed"},
		"ExpiredCursor":    {"/v1/events?after=" + old, 410, "cursor_expired"},
		"SubjectTooLong":   {"/v1/events?subject_id=" + string(make([]byte, 0)) + fmt.Sprintf("%0201d", 0), 422, "validation_failed"},
		"ZeroLimitIsFixed": {"/v1/events?limit=0", 422, "validation_failed"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rec := tapi.Get(tc.path)
			testkit.RequireProblem(t, rec, tc.code, tc.status)
		})
	}
}
