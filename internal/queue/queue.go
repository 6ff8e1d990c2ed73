// Package queue names riverbank's River queues. Domains choose the queue of
// the jobs they insert (job args' InsertOpts) and jobs/ sizes the queues,
// so the names live below both, where either can import them.
package queue

import "github.com/riverqueue/river"

// Queue names. Work is split so a flood of one kind (ledger application, a
// close-of-business fan-out) cannot starve the others.
const (
	// Default holds per-entity work: order confirmation and expiry, credit
	// restoration, case merges.
	Default = river.QueueDefault
	// Ledger holds ledger.apply jobs.
	Ledger = "ledger"
	// COB holds close-of-business runs and chunks.
	COB = "cob"
	// Maintenance holds sweepers and other periodic housekeeping.
	Maintenance = "maintenance"
	// Webhook holds webhook deliveries and their dispatch: receivers are
	// other people's servers, and a slow one must hold up neither business
	// jobs nor, beyond its own worker, other subscriptions.
	Webhook = "webhook"
	// Batch holds batch.chunk jobs: a 10,000-item batch is a hundred of
	// them, which must not queue ahead of per-entity work.
	Batch = "batch"
)
