// Package domains is the one list of riverbank's domain services. A process
// builds them once, on one store, and both the HTTP API (api.Services) and
// the River workers (jobs.NewRegistration) read them from here, so adding a
// domain means one field and one line in New, then its routes in
// api/routes.go and its workers in jobs.registerAll.
package domains

import (
	"log/slog"

	"riverbank/internal/batch"
	"riverbank/internal/cob"
	"riverbank/internal/collection"
	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/deadletter"
	"riverbank/internal/events"
	"riverbank/internal/ledger"
	"riverbank/internal/lending"
	"riverbank/internal/orders"
	"riverbank/internal/webhook"
)

// Services are the domain services of one process.
type Services struct {
	// Config is the process's configuration.
	Config *config.Config
	// Logger is the process's logger.
	Logger *slog.Logger
	// Store runs business writes and their River jobs in one transaction.
	Store *db.Store
	// Ledger is the double-entry ledger (SPEC §5).
	Ledger *ledger.Service
	// Orders are products, orders and inventory (SPEC §3).
	Orders *orders.Service
	// Lending are credit lines, loans, repayments and credit restoration
	// (SPEC §6).
	Lending *lending.Service
	// COB is the close of business (SPEC §7).
	COB *cob.Service
	// Collection are collection cases (SPEC §4).
	Collection *collection.Service
	// Events is the events feed (SPEC §8); writers append with
	// events.AppendTx in their own transactions.
	Events *events.Feed
	// DeadLetters are River's discarded jobs of every kind, listed and
	// retried through River (SPEC: credit.restore's dead letter).
	DeadLetters *deadletter.Service
	// Batches are submitted batches of journal entries, orders, loans or
	// repayments (SPEC §8), each item run through the services above.
	Batches *batch.Service
	// Webhooks are webhook subscriptions and the delivery of the events
	// feed to them (SPEC §8).
	Webhooks *webhook.Service
}

// New builds every domain service on store. cfg may be a zero Config in
// tests that exercise a single domain; each service applies its defaults.
func New(cfg *config.Config, logger *slog.Logger, store *db.Store) *Services {
	if cfg == nil {
		cfg = &config.Config{}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	ordersOpts := orders.Options{PaymentTimeout: cfg.OrderPaymentTimeout, Logger: logger}
	lendingOpts := lending.Options{
		Logger: logger, BusinessTZ: cfg.BusinessTZ,
		RestoreMaxAttempts: cfg.CreditRestoreMaxAttempts, RestoreBackoff: cfg.CreditRestoreBackoff,
	}
	return &Services{
		Config:  cfg,
		Logger:  logger,
		Store:   store,
		Ledger:  ledger.NewService(store),
		Orders:  orders.NewService(store, ordersOpts),
		Lending: lending.NewService(store, lendingOpts),
		COB: cob.NewService(store, cob.Options{
			Logger: logger, BusinessTZ: cfg.BusinessTZ, LateFeeDay: cfg.LateFeeDay, ChunkSize: cfg.COBChunkSize,
		}),
		Collection: collection.NewService(store, logger),
		Events:     events.NewFeed(store, events.Options{Retention: cfg.EventRetention}),
		// The store's River client retries too (*river.Client has
		// JobRetryTx); another JobInserter leaves retries unavailable.
		DeadLetters: deadletter.NewService(store, retrierOf(store)),
		// A batch item runs through the same services, built with the same
		// options on the store of the transaction that claims the item.
		Webhooks: webhook.NewService(store, webhook.Options{
			Logger: logger, Keys: cfg.WebhookKeys, MaxAttempts: cfg.WebhookMaxAttempts,
			AllowPrivate: cfg.WebhookAllowPrivate, Retention: cfg.EventRetention,
			// A run starts deliveries for a third of the job timeout, so its
			// last one (up to 10 s) ends well within it.
			Budget: min(webhook.DefaultBudget, cfg.JobTimeout/3),
		}),
		Batches: batch.NewService(store, batch.Options{Logger: logger, Domains: func(s *db.Store) batch.Domains {
			return batch.Domains{Ledger: ledger.NewService(s), Orders: orders.NewService(s, ordersOpts), Lending: lending.NewService(s, lendingOpts)}
		}}),
	}
}

// retrierOf returns the store's River client as a dead-letter retrier, or
// nil when the store was built with a job inserter that cannot retry.
func retrierOf(store *db.Store) deadletter.JobRetrier {
	if store == nil {
		return nil
	}
	r, _ := store.JobInserter().(deadletter.JobRetrier)
	return r
}
