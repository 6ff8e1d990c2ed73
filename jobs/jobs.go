// Package jobs holds riverbank's River workers and the table of periodic
// jobs, and builds the one River client a process runs. Workers are thin:
// they load what they need, call the domain inside a transaction and return
// River results; the rules live in internal/<domain>.
package jobs

import (
	"cmp"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"riverbank/internal/cob"
	"riverbank/internal/collection"
	"riverbank/internal/config"
	"riverbank/internal/domains"
	"riverbank/internal/events"
	"riverbank/internal/ledger"
	"riverbank/internal/orders"
	"riverbank/internal/queue"
	"riverbank/internal/webhook"
)

// Queue names, re-exported from internal/queue (where domains pick them).
const (
	QueueDefault     = queue.Default
	QueueLedger      = queue.Ledger
	QueueCOB         = queue.COB
	QueueMaintenance = queue.Maintenance
	QueueBatch       = queue.Batch
	QueueWebhook     = queue.Webhook
)

// Fetch settings, measured on the 2-core development machine (see
// BenchmarkRiverDrain and docs/benchmarks.md): River's default 100 ms
// FetchCooldown caps a busy queue at about ten fetches a second, which made
// 1,000 trivial jobs take ~0.95 s; 10 ms brought that to ~0.15 s at the cost
// of at most 100 cheap fetch queries a second per queue while it is busy.
// An idle queue is woken by LISTEN/NOTIFY on insert, so the poll interval
// is only a fallback.
const (
	FetchCooldown     = 10 * time.Millisecond
	FetchPollInterval = 500 * time.Millisecond
)

// Default periods of the leader's periodic jobs when the configuration
// leaves them zero (RIVERBANK_SWEEP_INTERVAL, RIVERBANK_PRUNE_INTERVAL).
const (
	DefaultSweepInterval = time.Minute
	DefaultPruneInterval = 10 * time.Minute
)

// DeadLetterRetention is how long River keeps discarded jobs.
const DeadLetterRetention = 90 * 24 * time.Hour

// Queues sizes every queue from RIVERBANK_WORKERS (the default queue's
// MaxWorkers).
func Queues(workers int) map[string]river.QueueConfig {
	return map[string]river.QueueConfig{
		QueueDefault:     {MaxWorkers: workers},
		QueueLedger:      {MaxWorkers: max(2, workers/2)},
		QueueCOB:         {MaxWorkers: max(2, workers/4)},
		QueueMaintenance: {MaxWorkers: 2},
		QueueBatch:       {MaxWorkers: max(2, workers/2)},
		// A delivery mostly waits on a receiver (up to 10 s) and holds no
		// database connection meanwhile: as many as the default queue.
		QueueWebhook: {MaxWorkers: max(4, workers)},
	}
}

// Deps are what workers need from the rest of the process: the domain
// services (internal/domains, the same list the API reads).
type Deps = domains.Services

// Registration is a set of workers plus periodic jobs; each domain
// contributes one.
type Registration struct {
	Workers  *river.Workers
	Periodic []*river.PeriodicJob
}

// NewRegistration returns every worker and periodic job riverbank runs.
// Periodic jobs run on the River leader only, so several instances never
// double-schedule them.
func NewRegistration(deps *Deps) (*Registration, error) {
	workers := river.NewWorkers()
	periodic := []*river.PeriodicJob{}
	if err := registerAll(workers, &periodic, deps); err != nil {
		return nil, err
	}
	return &Registration{Workers: workers, Periodic: periodic}, nil
}

// registerAll is the single list of every worker and periodic job.
func registerAll(workers *river.Workers, periodic *[]*river.PeriodicJob, deps *Deps) error {
	// RIVERBANK_SWEEP_INTERVAL and RIVERBANK_PRUNE_INTERVAL; a zero Config
	// (tests of one domain) gets the defaults.
	sweepEvery := cmp.Or(deps.Config.SweepInterval, DefaultSweepInterval)
	pruneEvery := cmp.Or(deps.Config.PruneInterval, DefaultPruneInterval)

	// Ledger: per-account batched application, and the sweep that picks up
	// non-urgent entries.
	river.AddWorker(workers, &ApplyWorker{Store: deps.Store, Budget: min(20*time.Second, deps.Config.JobTimeout/3)})
	river.AddWorker(workers, &SweepWorker{Store: deps.Store})
	if err := addPeriodic(periodic, river.PeriodicInterval(sweepEvery), ledger.SweepArgs{}, river.PeriodicJobOpts{ID: "ledger.sweep", RunOnStart: true}); err != nil {
		return err
	}

	// Orders: confirmation (one lingering job that confirms the waiting
	// orders in batches, asked for by the order that finds none due), the
	// expiry sweep every ExpireInterval, and the
	// sweep that re-enqueues confirmations that went missing.
	ordersSvc := deps.Orders
	river.AddWorker(workers, &OrderConfirmWorker{Orders: ordersSvc, Store: deps.Store, Budget: min(20*time.Second, deps.Config.JobTimeout/3), Logger: deps.Logger})
	river.AddWorker(workers, &OrderExpireWorker{Orders: ordersSvc})
	river.AddWorker(workers, &OrderSweepWorker{Orders: ordersSvc})
	if err := addPeriodic(periodic, river.PeriodicInterval(orders.ExpireInterval), orders.ExpireArgs{}, river.PeriodicJobOpts{ID: orders.KindExpire}); err != nil {
		return err
	}
	if err := addPeriodic(periodic, river.PeriodicInterval(sweepEvery), orders.SweepArgs{}, river.PeriodicJobOpts{ID: orders.KindSweep, RunOnStart: true}); err != nil {
		return err
	}

	// Lending: credit restoration, the outbox of every repayment.
	river.AddWorker(workers, &CreditRestoreWorker{Lending: deps.Lending})

	// Close of business: chunks, the trial balance, failed-loan retries,
	// and the scheduler that closes every open date up to yesterday (on
	// RIVERBANK_COB_SCHEDULE, evaluated in the business time zone).
	river.AddWorker(workers, &COBChunkWorker{COB: deps.COB})
	river.AddWorker(workers, &COBTrialBalanceWorker{COB: deps.COB, Ledger: deps.Ledger})
	river.AddWorker(workers, &COBRetryFailuresWorker{COB: deps.COB})
	river.AddWorker(workers, &COBScheduleWorker{COB: deps.COB})
	if deps.Config.COBScheduleParsed != nil {
		if err := addPeriodic(periodic, deps.Config.COBScheduleParsed, cob.ScheduleArgs{}, river.PeriodicJobOpts{ID: cob.KindSchedule, RunOnStart: true}); err != nil {
			return err
		}
	}

	// Events: retention, dropped in small batches every prune interval
	// (ten minutes by default).
	river.AddWorker(workers, &EventsPruneWorker{Events: deps.Events})
	if err := addPeriodic(periodic, river.PeriodicInterval(pruneEvery), events.PruneArgs{}, river.PeriodicJobOpts{ID: "events.prune", RunOnStart: true}); err != nil {
		return err
	}

	// Collection: case merges at overdue time, and the sweep for items
	// left unattached.
	river.AddWorker(workers, &CaseMergeWorker{Collection: deps.Collection})
	river.AddWorker(workers, &CaseSweepWorker{Collection: deps.Collection})
	if err := addPeriodic(periodic, river.PeriodicInterval(sweepEvery), collection.SweepArgs{}, river.PeriodicJobOpts{ID: collection.KindSweep}); err != nil {
		return err
	}

	// Batches: chunks of submitted batches, worked by every instance.
	river.AddWorker(workers, &BatchChunkWorker{Batches: deps.Batches})

	// Webhooks: per-subscription delivery, the dispatch that wakes
	// subscriptions with new events (every few seconds, leader only), and
	// the prune of old delivery rows.
	river.AddWorker(workers, &WebhookDeliverWorker{Webhooks: deps.Webhooks})
	river.AddWorker(workers, &WebhookDispatchWorker{Webhooks: deps.Webhooks})
	river.AddWorker(workers, &WebhookPruneWorker{Webhooks: deps.Webhooks})
	if err := addPeriodic(periodic, river.PeriodicInterval(deps.Webhooks.DispatchInterval()), webhook.DispatchArgs{}, river.PeriodicJobOpts{ID: webhook.KindDispatch, RunOnStart: true}); err != nil {
		return err
	}
	if err := addPeriodic(periodic, river.PeriodicInterval(pruneEvery), webhook.PruneArgs{}, river.PeriodicJobOpts{ID: webhook.KindPrune}); err != nil {
		return err
	}
	return nil
}

// periodicArgs are the args of a periodic job: each sets its own insert
// options (queue, attempts, uniqueness).
type periodicArgs interface {
	river.JobArgs
	river.JobArgsWithInsertOpts
}

// addPeriodic appends a periodic job after checking that its args allow a
// retry: the leader that runs a periodic job may be killed mid-run, and
// River's rescuer discards a rescued job with no attempts left, leaving a
// dead letter behind every such crash.
func addPeriodic(periodic *[]*river.PeriodicJob, schedule river.PeriodicSchedule, args periodicArgs, opts river.PeriodicJobOpts) error {
	if n := args.InsertOpts().MaxAttempts; n < 2 {
		return fmt.Errorf("periodic job %s: MaxAttempts %d, want at least 2 (a crash mid-run would discard it)", opts.ID, n)
	}
	*periodic = append(*periodic, river.NewPeriodicJob(schedule,
		func() (river.JobArgs, *river.InsertOpts) { return args, nil }, &opts))
	return nil
}

// NewClient builds the process's River client. With reg nil it is an
// insert-only client (no workers, cannot be started), as tools and tests use.
func NewClient(pool *pgxpool.Pool, cfg *config.Config, logger *slog.Logger, reg *Registration) (*river.Client[pgx.Tx], error) {
	rc := &river.Config{
		Logger:            logger,
		FetchCooldown:     FetchCooldown,
		FetchPollInterval: FetchPollInterval,
		// Every job is short (long work is split into chunks), so a short
		// timeout lets River rescue the jobs a killed process left
		// `running` within about 2×JobTimeout (+ the rescuer's 30 s period).
		JobTimeout:           cfg.JobTimeout,
		RescueStuckJobsAfter: 2 * cfg.JobTimeout,
		// Discarded jobs are the dead letters (GET /v1/dead-letters): keep
		// them for a quarter instead of River's 7 days, so a failed credit
		// restoration is not deleted before an operator has seen it.
		DiscardedJobRetentionPeriod: DeadLetterRetention,
	}
	if reg != nil {
		rc.ID = ClientID(time.Now())
		rc.Queues = Queues(cfg.Workers)
		rc.Workers = reg.Workers
		rc.PeriodicJobs = reg.Periodic
	}
	client, err := river.NewClient(riverpgxv5.New(pool), rc)
	if err != nil {
		return nil, fmt.Errorf("create river client: %w", err)
	}
	return client, nil
}

// ClientID is the River client id of this process: River's default (host
// name and start time, underscores for dots) with the process id added, so
// river_leader.leader_id and a job's attempted_by name the process even
// when several instances run on one host (systemd template units, the
// several-instances test), which is how an operator finds the leader and
// the process that last ran a job.
func ClientID(started time.Time) string {
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown_host"
	}
	host = strings.ReplaceAll(host, ".", "_")
	// River truncates degenerately long host names the same way; the id
	// must stay under 128 characters (river_leader's check).
	if len(host) > 60 {
		host = host[:60]
	}
	return fmt.Sprintf("%s_p%d_%s", host, os.Getpid(), strings.Replace(started.UTC().Format("2006_01_02T15_04_05.000000"), ".", "_", 1))
}
