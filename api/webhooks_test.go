package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2/humatest"
	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/api"
	"riverbank/internal/db"
	"riverbank/internal/events"
	"riverbank/internal/testkit"
	"riverbank/internal/webhook"
)

// webhooksAPIBundle is the API on a rolled-back transaction (testkit.Tx)
// with the process's default webhook settings: private targets refused,
// the test kit's webhook key.
type webhooksAPIBundle struct {
	kit *testkit.Bundle
	api humatest.TestAPI
}

func setupWebhooksAPI(t *testing.T) *webhooksAPIBundle {
	t.Helper()
	k := testkit.Tx(t)
	return &webhooksAPIBundle{kit: k, api: k.API(t)}
}

// publicURL is a target that passes the SSRF rule without DNS.
const publicURL = "https://93.184.216.34/hooks/riverbank"

type createdSubscription struct {
	api.WebhookSubscriptionBody
	Secret string `json:"secret"`
}

func (b *webhooksAPIBundle) create(t *testing.T, body map[string]any) createdSubscription {
	t.Helper()
	rec := b.api.Post("/v1/webhook-subscriptions", body)
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	return testkit.DecodeJSON[createdSubscription](t, rec)
}

func (b *webhooksAPIBundle) rows(t *testing.T) int64 {
	t.Helper()
	return b.kit.Count(t, `SELECT count(*) FROM webhook_subscription`)
}

func TestWebhookSubscriptionsAPILifecycle(t *testing.T) {
	t.Parallel()
	b := setupWebhooksAPI(t)

	c := b.create(t, map[string]any{"url": publicURL, "event_types": []string{events.OrderPaid, events.LoanRepaid}, "description": "ERP sync"})
	require.Positive(t, c.ID)
	require.Equal(t, publicURL, c.URL)
	require.Equal(t, []string{events.LoanRepaid, events.OrderPaid}, c.EventTypes)
	require.Equal(t, "ERP sync", c.Description)
	require.Equal(t, "active", c.Status)
	require.Nil(t, c.StalledJob)
	require.WithinDuration(t, time.Now(), c.CreatedAt, time.Minute)
	require.Regexp(t, `^whsec_[A-Za-z0-9_-]{43}$`, c.Secret)

	all := b.create(t, map[string]any{"url": publicURL + "/all"})
	require.Equal(t, []string{"*"}, all.EventTypes, "no event_types: every type")
	star := b.create(t, map[string]any{"url": publicURL + "/star", "event_types": []string{"*"}})
	require.Equal(t, []string{"*"}, star.EventTypes)
	require.NotEqual(t, c.Secret, all.Secret)
	// The description limit counts characters, not bytes.
	wide := b.create(t, map[string]any{"url": publicURL + "/wide", "description": strings.Repeat("账", 500)})
	rec := b.api.Delete(fmt.Sprintf("/v1/webhook-subscriptions/%d", wide.ID))
	require.Equal(t, http.StatusNoContent, rec.Code, rec.Body.String())

	rec = b.api.Get(fmt.Sprintf("/v1/webhook-subscriptions/%d", c.ID))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.NotContains(t, rec.Body.String(), "secret")
	require.NotContains(t, rec.Body.String(), strings.TrimPrefix(c.Secret, webhook.SecretPrefix))
	got := testkit.DecodeJSON[api.WebhookSubscriptionBody](t, rec)
	require.Equal(t, c.WebhookSubscriptionBody, got)

	// Pages by id.
	var ids []int64
	cursor := ""
	for pages := 1; ; pages++ {
		require.LessOrEqual(t, pages, 3)
		q := "?limit=2"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		rec := b.api.Get("/v1/webhook-subscriptions" + q)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		require.NotContains(t, rec.Body.String(), "secret")
		page := testkit.DecodeJSON[struct {
			Subscriptions []api.WebhookSubscriptionBody `json:"subscriptions"`
			NextCursor    string                        `json:"next_cursor"`
		}](t, rec)
		for _, s := range page.Subscriptions {
			ids = append(ids, s.ID)
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	require.Equal(t, []int64{c.ID, all.ID, star.ID}, ids)

	// Deliveries of a new subscription: none.
	rec = b.api.Get(fmt.Sprintf("/v1/webhook-subscriptions/%d/deliveries", c.ID))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.JSONEq(t, `{"deliveries":[]}`, rec.Body.String())

	rec = b.api.Delete(fmt.Sprintf("/v1/webhook-subscriptions/%d", c.ID))
	require.Equal(t, http.StatusNoContent, rec.Code, rec.Body.String())
	require.Empty(t, rec.Body.String())
	rec = b.api.Get(fmt.Sprintf("/v1/webhook-subscriptions/%d", c.ID))
	testkit.RequireProblem(t, rec, riverbank.ENOTFOUND, http.StatusNotFound)
	rec = b.api.Delete(fmt.Sprintf("/v1/webhook-subscriptions/%d", c.ID))
	testkit.RequireProblem(t, rec, riverbank.ENOTFOUND, http.StatusNotFound)
	rec = b.api.Get(fmt.Sprintf("/v1/webhook-subscriptions/%d/deliveries", c.ID))
	testkit.RequireProblem(t, rec, riverbank.ENOTFOUND, http.StatusNotFound)
	require.EqualValues(t, 2, b.rows(t))
}

// TestWebhookSubscriptionsAPIBadInputWritesNothing: every bad input is a
// 422 with its code, and no row is written.
func TestWebhookSubscriptionsAPIBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	b := setupWebhooksAPI(t)
	before := b.rows(t)
	tests := []struct {
		name string
		body map[string]any
		code string
	}{
		{"MissingURL", map[string]any{"description": "x"}, riverbank.EINVALID},
		{"EmptyURL", map[string]any{"url": ""}, riverbank.EINVALID},
		{"NotHTTP", map[string]any{"url": "ftp://93.184.216.34/x"}, riverbank.EINVALID},
		{"NoScheme", map[string]any{"url": "93.184.216.34/x"}, riverbank.EINVALID},
		{"UserInfo", map[string]any{"url": "https://user:pw@93.184.216.34/x"}, riverbank.EINVALID},
		{"Fragment", map[string]any{"url": publicURL + "#frag"}, riverbank.EINVALID},
		{"TooLong", map[string]any{"url": publicURL + "/" + strings.Repeat("a", 2048)}, riverbank.EINVALID},
		{"NULInURL", map[string]any{"url": publicURL + "\u0000"}, riverbank.EINVALID},
		{"UnknownType", map[string]any{"url": publicURL, "event_types": []string{"order.exploded"}}, riverbank.EINVALID},
		{"StarWithOthers", map[string]any{"url": publicURL, "event_types": []string{"*", events.OrderPaid}}, riverbank.EINVALID},
		{"TooManyTypes", map[string]any{"url": publicURL, "event_types": make([]string, 65)}, riverbank.EINVALID},
		{"TypesNotAList", map[string]any{"url": publicURL, "event_types": "order.paid"}, riverbank.EINVALID},
		{"DescriptionTooLong", map[string]any{"url": publicURL, "description": strings.Repeat("d", 501)}, riverbank.EINVALID},
		{"DescriptionNUL", map[string]any{"url": publicURL, "description": "a\u0000b"}, riverbank.EINVALID},
		{"Loopback", map[string]any{"url": "http://127.0.0.1:8080/hook"}, riverbank.EWEBHOOKTARGETFORBIDDEN},
		{"Localhost", map[string]any{"url": "http://localhost/hook"}, riverbank.EWEBHOOKTARGETFORBIDDEN},
		{"LoopbackV6", map[string]any{"url": "http://[::1]/hook"}, riverbank.EWEBHOOKTARGETFORBIDDEN},
		{"Private", map[string]any{"url": "https://10.20.30.40/hook"}, riverbank.EWEBHOOKTARGETFORBIDDEN},
		{"Metadata", map[string]any{"url": "http://169.254.169.254/latest/meta-data/"}, riverbank.EWEBHOOKTARGETFORBIDDEN},
		{"CGNAT", map[string]any{"url": "http://100.64.1.1/"}, riverbank.EWEBHOOKTARGETFORBIDDEN},
		{"ULA", map[string]any{"url": "http://[fd00::1]/"}, riverbank.EWEBHOOKTARGETFORBIDDEN},
	}
	for _, tt := range tests {
		rec := b.api.Post("/v1/webhook-subscriptions", tt.body)
		p := testkit.RequireProblem(t, rec, tt.code, http.StatusUnprocessableEntity)
		require.NotEmpty(t, p.Detail, tt.name)
	}
	require.Equal(t, before, b.rows(t), "nothing written")

	for _, path := range []string{"/v1/webhook-subscriptions?cursor=nope", "/v1/webhook-subscriptions?limit=0", "/v1/webhook-subscriptions?limit=501",
		"/v1/webhook-subscriptions/0", "/v1/webhook-subscriptions/x", "/v1/webhook-subscriptions/1/deliveries?cursor=bad"} {
		rec := b.api.Get(path)
		testkit.RequireProblem(t, rec, riverbank.EINVALID, http.StatusUnprocessableEntity)
	}
	rec := b.api.Get("/v1/webhook-subscriptions/9223372036854775807")
	testkit.RequireProblem(t, rec, riverbank.ENOTFOUND, http.StatusNotFound)
}

// TestWebhookSubscriptionsAPIWithoutKey: a process without
// RIVERBANK_WEBHOOK_KEY cannot create subscriptions: 503 with a message
// that names the variable, nothing written.
func TestWebhookSubscriptionsAPIWithoutKey(t *testing.T) {
	t.Parallel()
	k := testkit.Tx(t)
	svcs := *k.Services
	svcs.Webhooks = webhook.NewService(k.Store, webhook.Options{})
	_, tapi := humatest.New(t)
	api.Register(tapi, &api.Services{Services: &svcs, River: k.Inserter})
	rec := tapi.Post("/v1/webhook-subscriptions", map[string]any{"url": publicURL})
	p := testkit.RequireProblem(t, rec, riverbank.EWEBHOOKKEYMISSING, http.StatusServiceUnavailable)
	require.Contains(t, p.Detail, "RIVERBANK_WEBHOOK_KEY")
	require.Zero(t, k.Count(t, `SELECT count(*) FROM webhook_subscription`))
	// Bad input is still a 422 first.
	rec = tapi.Post("/v1/webhook-subscriptions", map[string]any{"url": "ftp://x"})
	testkit.RequireProblem(t, rec, riverbank.EINVALID, http.StatusUnprocessableEntity)
}

// TestWebhookDeliveriesAPIPagesNewestFirst: the deliveries endpoint shows
// each event's attempts and outcome, newest first, in cursor pages.
func TestWebhookDeliveriesAPIPagesNewestFirst(t *testing.T) {
	t.Parallel()
	b := setupWebhooksAPI(t)
	c := b.create(t, map[string]any{"url": publicURL})
	status200, status500 := int32(200), int32(500)
	msg := "HTTP 500: down"
	require.NoError(t, b.kit.Store.InTx(b.kit.Ctx, func(tx *db.Tx) error {
		for ev := int64(101); ev <= 104; ev++ {
			if _, err := tx.RecordWebhookAttempt(b.kit.Ctx, db.RecordWebhookAttemptParams{SubscriptionID: c.ID, EventID: ev, EventType: events.OrderPaid, LastStatus: &status200, Delivered: true}); err != nil {
				return err
			}
		}
		for i := 0; i < 2; i++ {
			if _, err := tx.RecordWebhookAttempt(b.kit.Ctx, db.RecordWebhookAttemptParams{SubscriptionID: c.ID, EventID: 105, EventType: events.LoanRepaid, LastStatus: &status500, LastError: &msg}); err != nil {
				return err
			}
		}
		return nil
	}))

	var got []api.WebhookDeliveryBody
	cursor := ""
	for pages := 1; ; pages++ {
		require.LessOrEqual(t, pages, 3)
		q := "?limit=2"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		rec := b.api.Get(fmt.Sprintf("/v1/webhook-subscriptions/%d/deliveries%s", c.ID, q))
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		page := testkit.DecodeJSON[struct {
			Deliveries []api.WebhookDeliveryBody `json:"deliveries"`
			NextCursor string                    `json:"next_cursor"`
		}](t, rec)
		got = append(got, page.Deliveries...)
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	require.Len(t, got, 5)
	for i, want := range []int64{105, 104, 103, 102, 101} {
		require.Equal(t, want, got[i].EventID)
	}
	failing := got[0]
	require.Equal(t, events.LoanRepaid, failing.Type)
	require.Equal(t, 2, failing.Attempts)
	require.Equal(t, 500, *failing.LastStatus)
	require.Equal(t, msg, *failing.LastError)
	require.Nil(t, failing.DeliveredAt)
	ok := got[1]
	require.Equal(t, 1, ok.Attempts)
	require.Equal(t, 200, *ok.LastStatus)
	require.Nil(t, ok.LastError)
	require.NotNil(t, ok.DeliveredAt)
}
