package api

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"riverbank"
	"riverbank/internal/webhook"
)

// WebhookSubscriptionBody is a subscription as every endpoint shows it.
// The secret is never part of it: only the create response carries it.
type WebhookSubscriptionBody struct {
	ID          int64     `json:"id"`
	URL         string    `json:"url" example:"https://example.com/hooks/riverbank"`
	EventTypes  []string  `json:"event_types" doc:"The event types delivered, sorted; [\"*\"] means every type (also types added later)." example:"[\"order.paid\",\"loan.repaid\"]"`
	Description string    `json:"description"`
	Status      string    `json:"status" enum:"active,stalled" doc:"stalled: a delivery ran out of attempts; deliveries wait at that event until the dead letter stalled_job_id is retried (POST /v1/dead-letters/{job_id}/retry)."`
	StalledJob  *int64    `json:"stalled_job_id,omitempty" doc:"The discarded webhook.deliver job to retry, when stalled."`
	CreatedAt   time.Time `json:"created_at"`
}

func webhookSubscriptionBody(s *webhook.Subscription) WebhookSubscriptionBody {
	out := WebhookSubscriptionBody{ID: s.ID, URL: s.URL, EventTypes: s.EventTypes, Description: s.Description, Status: "active", StalledJob: s.StalledJobID, CreatedAt: s.CreatedAt}
	if out.EventTypes == nil {
		out.EventTypes = []string{webhook.AllTypes}
	}
	if s.StalledJobID != nil {
		out.Status = "stalled"
	}
	return out
}

// CreatedWebhookSubscriptionBody is the create response: the subscription
// and its signing secret, shown this once.
type CreatedWebhookSubscriptionBody struct {
	WebhookSubscriptionBody
	Secret string `json:"secret" doc:"The HMAC-SHA256 key of Riverbank-Signature (the whole string). Shown only in this response: store it now; it cannot be read again." example:"whsec_4tq0cC2v0b3YyqJ8m8ZJ1hXx6Qm2Cq8b0a6lXr0YV9M"`
}

// WebhookDeliveryBody is one event's delivery to a subscription.
type WebhookDeliveryBody struct {
	EventID       int64      `json:"event_id"`
	Type          string     `json:"type" example:"order.paid"`
	Attempts      int        `json:"attempts" doc:"Attempts so far (across retries of a dead letter)."`
	LastStatus    *int       `json:"last_status,omitempty" doc:"HTTP status of the last attempt; absent when no answer came (timeout, refused connection, forbidden address)."`
	LastError     *string    `json:"last_error,omitempty" doc:"Why the last attempt failed; absent once delivered."`
	LastAttemptAt time.Time  `json:"last_attempt_at"`
	DeliveredAt   *time.Time `json:"delivered_at,omitempty" doc:"When a 2xx came back; absent while the event is being retried."`
}

type createWebhookSubscriptionInput struct {
	Body struct {
		URL         string   `json:"url" minLength:"1" maxLength:"2048" doc:"http or https, no user information, no fragment. Without RIVERBANK_WEBHOOK_ALLOW_PRIVATE, a host that is or resolves to a loopback, private, link-local, CGNAT or other internal address is 422 webhook_target_forbidden (checked again at every delivery on the address connected to)."`
		EventTypes  []string `json:"event_types,omitempty" maxItems:"64" doc:"Event types to deliver (GET /v1/events types). Omitted, empty or [\"*\"]: every type."`
		Description string   `json:"description,omitempty" maxLength:"500"`
	}
}

type createWebhookSubscriptionOutput struct {
	Body CreatedWebhookSubscriptionBody
}

type webhookSubscriptionIDInput struct {
	ID int64 `path:"id" minimum:"1"`
}

type webhookSubscriptionOutput struct {
	Body WebhookSubscriptionBody
}

type listWebhookSubscriptionsInput struct {
	PageParams
}

type listWebhookSubscriptionsOutput struct {
	Body struct {
		Subscriptions []WebhookSubscriptionBody `json:"subscriptions"`
		NextCursor    string                    `json:"next_cursor,omitempty"`
	}
}

type listWebhookDeliveriesInput struct {
	ID int64 `path:"id" minimum:"1"`
	PageParams
}

type listWebhookDeliveriesOutput struct {
	Body struct {
		Deliveries []WebhookDeliveryBody `json:"deliveries"`
		NextCursor string                `json:"next_cursor,omitempty"`
	}
}

func (h *handlers) registerWebhooks(api huma.API) {
	tags := []string{"Webhooks"}
	huma.Register(api, huma.Operation{OperationID: "create-webhook-subscription", Method: http.MethodPost, Path: "/v1/webhook-subscriptions", Summary: "Subscribe a URL to events", Tags: tags,
		Description: "Creates a subscription and answers 201 with its signing secret, shown only here. It starts at the end of the feed: events that become readable in " +
			"GET /v1/events after this request are delivered, older ones are not. Each event is POSTed as GET /v1/events shows it, with headers Riverbank-Event-Id and " +
			"Riverbank-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, \"<t>.<body>\")>; a 2xx within 10 s is delivered, anything else (redirects included) is retried " +
			"with backoff and, after RIVERBANK_WEBHOOK_MAX_ATTEMPTS, becomes a dead letter. Events of one subscription are delivered in feed order, one at a time, at least once. " +
			"No idempotency key: a repeated request creates a second subscription (delete it). 503 webhook_key_missing when the server has no RIVERBANK_WEBHOOK_KEY.",
		DefaultStatus: http.StatusCreated,
		Metadata:      answers(codes(riverbank.EWEBHOOKTARGETFORBIDDEN, riverbank.EWEBHOOKKEYMISSING), nil)}, h.createWebhookSubscription)
	huma.Register(api, huma.Operation{OperationID: "list-webhook-subscriptions", Method: http.MethodGet, Path: "/v1/webhook-subscriptions", Summary: "List webhook subscriptions by id", Tags: tags}, h.listWebhookSubscriptions)
	huma.Register(api, huma.Operation{OperationID: "get-webhook-subscription", Method: http.MethodGet, Path: "/v1/webhook-subscriptions/{id}", Summary: "Get a webhook subscription (without its secret)", Tags: tags,
		Metadata: answers(codes(riverbank.ENOTFOUND), nil)}, h.getWebhookSubscription)
	huma.Register(api, huma.Operation{OperationID: "delete-webhook-subscription", Method: http.MethodDelete, Path: "/v1/webhook-subscriptions/{id}", Summary: "Delete a webhook subscription", Tags: tags,
		Description:   "Deletes the subscription and its delivery history (204). No delivery starts after this; one already in flight completes.",
		DefaultStatus: http.StatusNoContent,
		Metadata:      answers(codes(riverbank.ENOTFOUND), nil)}, h.deleteWebhookSubscription)
	huma.Register(api, huma.Operation{OperationID: "list-webhook-deliveries", Method: http.MethodGet, Path: "/v1/webhook-subscriptions/{id}/deliveries", Summary: "A subscription's deliveries, newest first", Tags: tags,
		Description: "One entry per event attempted: attempts, the last status and error, delivered_at once a 2xx came back. Delivered entries older than RIVERBANK_EVENT_RETENTION are dropped.",
		Metadata:    answers(codes(riverbank.ENOTFOUND), nil)}, h.listWebhookDeliveries)
}

func (h *handlers) createWebhookSubscription(ctx context.Context, in *createWebhookSubscriptionInput) (*createWebhookSubscriptionOutput, error) {
	sub, secret, err := h.Webhooks.Create(ctx, webhook.CreateInput{URL: in.Body.URL, EventTypes: in.Body.EventTypes, Description: in.Body.Description})
	if err != nil {
		return nil, err
	}
	return &createWebhookSubscriptionOutput{Body: CreatedWebhookSubscriptionBody{WebhookSubscriptionBody: webhookSubscriptionBody(sub), Secret: secret}}, nil
}

func (h *handlers) listWebhookSubscriptions(ctx context.Context, in *listWebhookSubscriptionsInput) (*listWebhookSubscriptionsOutput, error) {
	var after int64
	if in.Cursor != "" {
		id, err := decodeIDCursor(in.Cursor)
		if err != nil {
			return nil, err
		}
		after = id
	}
	subs, err := h.Webhooks.List(ctx, after, in.limit())
	if err != nil {
		return nil, err
	}
	out := &listWebhookSubscriptionsOutput{}
	out.Body.Subscriptions = make([]WebhookSubscriptionBody, len(subs))
	for i, s := range subs {
		out.Body.Subscriptions[i] = webhookSubscriptionBody(s)
	}
	if len(subs) == in.limit() {
		out.Body.NextCursor = encodeIDCursor(subs[len(subs)-1].ID)
	}
	return out, nil
}

func (h *handlers) getWebhookSubscription(ctx context.Context, in *webhookSubscriptionIDInput) (*webhookSubscriptionOutput, error) {
	sub, err := h.Webhooks.Get(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &webhookSubscriptionOutput{Body: webhookSubscriptionBody(sub)}, nil
}

func (h *handlers) deleteWebhookSubscription(ctx context.Context, in *webhookSubscriptionIDInput) (*struct{}, error) {
	return nil, h.Webhooks.Delete(ctx, in.ID)
}

func (h *handlers) listWebhookDeliveries(ctx context.Context, in *listWebhookDeliveriesInput) (*listWebhookDeliveriesOutput, error) {
	var before int64
	if in.Cursor != "" {
		id, err := decodeIDCursor(in.Cursor)
		if err != nil {
			return nil, err
		}
		before = id
	}
	ds, err := h.Webhooks.Deliveries(ctx, in.ID, before, in.limit())
	if err != nil {
		return nil, err
	}
	out := &listWebhookDeliveriesOutput{}
	out.Body.Deliveries = make([]WebhookDeliveryBody, len(ds))
	for i, d := range ds {
		out.Body.Deliveries[i] = WebhookDeliveryBody{EventID: d.EventID, Type: d.EventType, Attempts: d.Attempts, LastStatus: d.LastStatus,
			LastError: d.LastError, LastAttemptAt: d.LastAttemptAt, DeliveredAt: d.DeliveredAt}
	}
	if len(ds) == in.limit() {
		out.Body.NextCursor = encodeIDCursor(ds[len(ds)-1].ID)
	}
	return out, nil
}
