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
