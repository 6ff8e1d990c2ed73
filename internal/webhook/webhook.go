// Package webhook delivers the events feed (internal/events) to receivers
// over HTTP (SPEC §8): subscriptions, their signing secrets, and the River
// jobs that deliver each subscription's events in feed order.
//
// # Ordering and at most one delivery in flight
//
// A subscription stores a cursor, a position of the feed. Its events are
// delivered by one River job, webhook.deliver {subscription_id}, unique
// per subscription while it is live (available, scheduled, running,
// retryable, pending), so at most one delivery of a subscription is in
// flight. The job reads the events it wants after the cursor, only below
// the snapshot xmin as the feed does (gap-free: no event can later appear
// behind the cursor), POSTs the first, and on a 2xx advances the cursor
// and records the delivery in one transaction — the update is conditional
// on the cursor it started from, so a deleted subscription stops the job.
// Then the next event, up to a bounded amount of work per run, after which
// the job completes itself and enqueues its successor in the same
// transaction (River's unique key is free once the running job is
// completed in it). An event is therefore never sent before every earlier
// one has been acknowledged.
//
// Any other answer (a non-2xx status, a redirect, a timeout after 10 s, a
// refused connection, a forbidden address) is recorded on the delivery row
// and returned as the job's error: River retries it with the service's
// backoff. A run that was a retry hands over to a fresh job after its
// first success, so every event gets the full RIVERBANK_WEBHOOK_MAX_ATTEMPTS.
// When the last attempt fails, River discards the job — a dead letter (GET
// /v1/dead-letters) — and the subscription records it (stalled_job_id):
// its deliveries wait at that event, and the dispatch leaves it alone,
// until the job is retried (POST /v1/dead-letters/{job_id}/retry), which
// resumes at the same event. Delivery is at least once: a receiver that
// answered 2xx after riverbank gave up waiting, or a crash between the
// answer and the commit, means the event is sent again (receivers
// de-duplicate on Riverbank-Event-Id).
//
// # Waking up
//
// Appending an event does nothing for webhooks (no work added to business
// writes). The periodic webhook.dispatch (every DispatchInterval, default
// 2 s, on the leader) enqueues the delivery job of every subscription not
// stalled that has an event it wants after its cursor — one index probe
// per subscription — and moves the cursors of filtered subscriptions over
// events they do not want. So an event reaches a receiver about one
// dispatch interval after it becomes readable in the feed (half of it on
// average); a subscription with a backlog is worked continuously, one job
// handing over to the next.
//
// # Secrets
//
// The HMAC key must be at hand at delivery, so it cannot be hashed: it is
// encrypted with AES-256-GCM under RIVERBANK_WEBHOOK_KEY (see keyring) and
// shown once, in the response that creates the subscription. Without a
// key no subscription can be created (503 webhook_key_missing).
package webhook

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"
	"unicode/utf8"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/events"
)

// Defaults of Options.
const (
	DefaultMaxAttempts      = 12
	DefaultBackoff          = 10 * time.Second
	DefaultMaxBackoff       = time.Hour
	DefaultTimeout          = 10 * time.Second
	DefaultBudget           = 20 * time.Second
	DefaultBatch            = 100
	DefaultDispatchInterval = 2 * time.Second
	defaultRetention        = 30 * 24 * time.Hour
	// MaxDescriptionLength bounds a subscription's description.
	MaxDescriptionLength = 500
	// AllTypes, alone or an empty list, subscribes to every event type.
	AllTypes = "*"
	// maxTypes bounds a subscription's event_types.
	maxTypes = 64
	// Page sizes of the lists.
	DefaultLimit = 50
	MaxLimit     = 500
)

// Options configure the service.
type Options struct {
	Logger *slog.Logger
	// Keys encrypt signing secrets (RIVERBANK_WEBHOOK_KEY): the first
	// seals, every one opens. Without one, Create fails with
	// webhook_key_missing.
	Keys [][]byte
	// MaxAttempts of a delivery before River discards its job
	// (RIVERBANK_WEBHOOK_MAX_ATTEMPTS, default 12).
	MaxAttempts int
	// AllowPrivate allows targets on loopback, private and link-local
	// addresses (RIVERBANK_WEBHOOK_ALLOW_PRIVATE).
	AllowPrivate bool
	// Backoff is the first retry delay (default 10 s); it doubles per
	// attempt up to MaxBackoff (default 1 h). With the defaults the 12
	// attempts of a delivery span about 3.4 hours.
	Backoff, MaxBackoff time.Duration
	// Timeout bounds one delivery request (default 10 s: SPEC §8).
	Timeout time.Duration
	// Budget bounds the time one job run starts new deliveries in (default
	// 20 s), and Batch the events it delivers (default 100), before it
	// hands over to a fresh job.
	Budget time.Duration
	Batch  int
	// DispatchInterval is the period of webhook.dispatch (default 2 s).
	DispatchInterval time.Duration
	// Retention is how long delivered rows are kept (the event retention).
	Retention time.Duration
	// Resolver resolves hosts at create time (net.DefaultResolver).
	Resolver Resolver
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Service manages subscriptions and delivers their events.
type Service struct {
	store        *db.Store
	logger       *slog.Logger
	keys         *keyring
	maxAttempts  int
	allowPrivate bool
	backoff      time.Duration
	maxBackoff   time.Duration
	timeout      time.Duration
	budget       time.Duration
	batch        int
	dispatch     time.Duration
	retention    time.Duration
	resolver     Resolver
	now          func() time.Time
	client       *http.Client
}

// NewService returns the webhook service on store.
func NewService(store *db.Store, opts Options) *Service {
	s := &Service{
		store: store, logger: opts.Logger, maxAttempts: opts.MaxAttempts, allowPrivate: opts.AllowPrivate,
		backoff: opts.Backoff, maxBackoff: opts.MaxBackoff, timeout: opts.Timeout, budget: opts.Budget, batch: opts.Batch,
		dispatch: opts.DispatchInterval, retention: opts.Retention, resolver: opts.Resolver, now: opts.Now,
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	kr, err := newKeyring(opts.Keys)
	if err != nil {
		// Config validates the keys; a caller that passes bad ones gets a
		// service that cannot create subscriptions, and a log line.
		s.logger.Error("webhooks: ignoring RIVERBANK_WEBHOOK_KEY", "error", err)
		kr, _ = newKeyring(nil)
	}
	s.keys = kr
	if s.maxAttempts <= 0 {
		s.maxAttempts = DefaultMaxAttempts
	}
	if s.backoff <= 0 {
		s.backoff = DefaultBackoff
	}
	if s.maxBackoff <= 0 {
		s.maxBackoff = DefaultMaxBackoff
	}
	if s.timeout <= 0 {
		s.timeout = DefaultTimeout
	}
	if s.budget <= 0 {
		s.budget = DefaultBudget
	}
	if s.batch <= 0 {
		s.batch = DefaultBatch
	}
	if s.dispatch <= 0 {
		s.dispatch = DefaultDispatchInterval
	}
	if s.retention <= 0 {
		s.retention = defaultRetention
	}
	if s.resolver == nil {
		s.resolver = net.DefaultResolver
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.client = newHTTPClient(s.allowPrivate, s.timeout)
	return s
}

// DispatchInterval is how often webhook.dispatch runs.
func (s *Service) DispatchInterval() time.Duration { return s.dispatch }

// Subscription is a webhook subscription as the API shows it; the secret
// is never part of it.
type Subscription struct {
	ID  int64
	URL string
	// EventTypes are the types delivered, sorted; nil means every type.
	EventTypes  []string
	Description string
	// StalledJobID is the discarded webhook.deliver job (a dead letter)
	// the subscription's deliveries wait on, if any.
	StalledJobID *int64
	CreatedAt    time.Time
}

func fromRow(r db.WebhookSubscription) *Subscription {
	return &Subscription{ID: r.ID, URL: r.Url, EventTypes: r.EventTypes, Description: r.Description, StalledJobID: r.StalledJobID, CreatedAt: r.CreatedAt}
}

// CreateInput is a new subscription.
type CreateInput struct {
	URL string
	// EventTypes are event types of events.Types; empty, or "*" alone,
	// means every type (including types added later).
	EventTypes  []string
	Description string
}

// normalizeTypes validates event types and returns them sorted without
// duplicates, or nil for every type.
func normalizeTypes(in []string) ([]string, error) {
	bad := func(format string, args ...any) *riverbank.Error {
		return riverbank.Errorf(riverbank.EINVALID, format, args...).WithDetail("field", "event_types")
	}
	if len(in) > maxTypes {
		return nil, bad("event_types may name at most %d types", maxTypes)
	}
	if len(in) == 0 || (len(in) == 1 && in[0] == AllTypes) {
		return nil, nil
	}
	out := make([]string, 0, len(in))
	for _, t := range in {
		if t == AllTypes {
			return nil, bad("\"*\" (every type) must be the only item of event_types")
		}
		if !slices.Contains(events.Types, t) {
			return nil, bad("event_types: %q is not an event type", truncate(t, 64)).WithDetail("allowed", events.Types)
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		s = s[:n]
	}
	return s
}

// Create validates and stores a subscription and returns it with its
// signing secret, which is shown this once. It starts at the feed's end:
// only events that are not yet readable in the feed when it is created
// are delivered. Bad input is 422 (validation_failed, or
// webhook_target_forbidden for an internal target) and writes nothing.
func (s *Service) Create(ctx context.Context, in CreateInput) (*Subscription, string, error) {
	u, err := ParseURL(in.URL)
	if err != nil {
		return nil, "", err
	}
	types, err := normalizeTypes(in.EventTypes)
	if err != nil {
		return nil, "", err
	}
	if !riverbank.ValidText(in.Description) || utf8.RuneCountInString(in.Description) > MaxDescriptionLength {
		return nil, "", riverbank.Errorf(riverbank.EINVALID, "description must be valid text of at most %d characters", MaxDescriptionLength).WithDetail("field", "description")
	}
	if s.keys.seal == nil {
		return nil, "", riverbank.Errorf(riverbank.EWEBHOOKKEYMISSING,
			"webhook subscriptions cannot be created: the operator has not set RIVERBANK_WEBHOOK_KEY, the key that encrypts their signing secrets")
	}
	if err := s.checkTarget(ctx, u); err != nil {
		return nil, "", err
	}
	secret, err := newSecret()
	if err != nil {
		return nil, "", err
	}
	row, err := db.InTxV(ctx, s.store, func(tx *db.Tx) (db.WebhookSubscription, error) {
		id, err := tx.NextWebhookSubscriptionID(ctx)
		if err != nil {
			return db.WebhookSubscription{}, fmt.Errorf("draw subscription id: %w", err)
		}
		keyID, nonce, ct, err := s.keys.sealSecret(id, secret)
		if err != nil {
			return db.WebhookSubscription{}, err
		}
		row, err := tx.InsertWebhookSubscription(ctx, db.InsertWebhookSubscriptionParams{
			ID: id, Url: in.URL, EventTypes: types, Description: in.Description,
			SecretKeyID: keyID, SecretNonce: nonce, SecretCiphertext: ct,
		})
		if err != nil {
			return db.WebhookSubscription{}, fmt.Errorf("insert subscription: %w", err)
		}
		return row, nil
	})
	if err != nil {
		return nil, "", err
	}
	s.logger.InfoContext(ctx, "webhook subscription created", "subscription_id", row.ID, "host", u.Host)
	return fromRow(row), secret, nil
}

func notFound(id int64) error {
	return riverbank.Errorf(riverbank.ENOTFOUND, "webhook subscription %d not found", id)
}

// Get returns one subscription.
func (s *Service) Get(ctx context.Context, id int64) (*Subscription, error) {
	row, err := s.store.Queries().GetWebhookSubscription(ctx, id)
	if db.IsNotFound(err) {
		return nil, notFound(id)
	}
	if err != nil {
		return nil, fmt.Errorf("get subscription %d: %w", id, err)
	}
	return fromRow(row), nil
}

func pageLimit(limit int) (int, error) {
	switch {
	case limit < 0:
		return 0, riverbank.Errorf(riverbank.EINVALID, "limit must be between 1 and %d", MaxLimit)
	case limit == 0:
		return DefaultLimit, nil
	default:
		return min(limit, MaxLimit), nil
	}
}

// List returns subscriptions by id after afterID.
func (s *Service) List(ctx context.Context, afterID int64, limit int) ([]*Subscription, error) {
	lim, err := pageLimit(limit)
	if err != nil {
		return nil, err
	}
	rows, err := s.store.Queries().ListWebhookSubscriptions(ctx, db.ListWebhookSubscriptionsParams{AfterID: afterID, Lim: int32(lim)})
	if err != nil {
		return nil, fmt.Errorf("list subscriptions: %w", err)
	}
	out := make([]*Subscription, len(rows))
	for i, r := range rows {
		out[i] = fromRow(r)
	}
	return out, nil
}

// Delete removes a subscription and its delivery history. No delivery
// starts after it commits; one in flight at that moment completes, and
// its job then finds the subscription gone and stops.
func (s *Service) Delete(ctx context.Context, id int64) error {
	n, err := s.store.Queries().DeleteWebhookSubscription(ctx, id)
	if err != nil {
		return fmt.Errorf("delete subscription %d: %w", id, err)
	}
	if n == 0 {
		return notFound(id)
	}
	s.logger.InfoContext(ctx, "webhook subscription deleted", "subscription_id", id)
	return nil
}

// Delivery is the record of one event's delivery to a subscription.
type Delivery struct {
	ID            int64
	EventID       int64
	EventType     string
	Attempts      int
	LastStatus    *int
	LastError     *string
	LastAttemptAt time.Time
	DeliveredAt   *time.Time
	CreatedAt     time.Time
}

// Deliveries returns a subscription's deliveries, newest first, before
// the delivery beforeID (0: from the newest).
func (s *Service) Deliveries(ctx context.Context, subscriptionID, beforeID int64, limit int) ([]*Delivery, error) {
	lim, err := pageLimit(limit)
	if err != nil {
		return nil, err
	}
	if _, err := s.Get(ctx, subscriptionID); err != nil {
		return nil, err
	}
	rows, err := s.store.Queries().ListWebhookDeliveries(ctx, db.ListWebhookDeliveriesParams{SubscriptionID: subscriptionID, BeforeID: beforeID, Lim: int32(lim)})
	if err != nil {
		return nil, fmt.Errorf("list deliveries: %w", err)
	}
	out := make([]*Delivery, len(rows))
	for i, r := range rows {
		d := &Delivery{ID: r.ID, EventID: r.EventID, EventType: r.EventType, Attempts: int(r.Attempts), LastError: r.LastError,
			LastAttemptAt: r.LastAttemptAt, DeliveredAt: r.DeliveredAt, CreatedAt: r.CreatedAt}
		if r.LastStatus != nil {
			st := int(*r.LastStatus)
			d.LastStatus = &st
		}
		out[i] = d
	}
	return out, nil
}
