package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/ledger"
	"riverbank/internal/testkit"
	"riverbank/jobs"
)

// ledgerJobsBundle is a database of a test's own with a store, the ledger
// service and a River client that is built but not started.
type ledgerJobsBundle struct {
	ctx    context.Context
	cfg    *config.Config
	pool   *pgxpool.Pool
	store  *db.Store
	svc    *ledger.Service
	client *river.Client[pgx.Tx]
}

// ledgerJobsOpts change the client setupLedgerJobs builds.
type ledgerJobsOpts struct {
	// worker, when set, is the only worker the client runs (no periodic
	// jobs).
	worker *jobs.ApplyWorker
	// noPeriodic drops the periodic jobs (the ledger sweep) from the real
	// registration.
	noPeriodic bool
}

// setupLedgerJobs builds the process's real River client (every worker and
// periodic job of jobs.NewRegistration) on a fresh database, as opts
// change it.
func setupLedgerJobs(t *testing.T, opts ledgerJobsOpts) *ledgerJobsBundle {
	t.Helper()
	// A pool larger than the default, so 50 writers and the workers do not
	// just queue for connections.
	k := testkit.DB(t, testkit.DBOptions{MaxConns: 24})
	require.Positive(t, k.Config.Workers)
	var client *river.Client[pgx.Tx]
	if worker := opts.worker; worker == nil {
		client = k.Client(t, func(reg *jobs.Registration) {
			if opts.noPeriodic {
				reg.Periodic = nil
			}
		})
	} else {
		worker.Store = k.Store
		workers := river.NewWorkers()
		river.AddWorker(workers, worker)
		var err error
		client, err = river.NewClient(riverpgxv5.New(k.Pool), &river.Config{
			Logger:            k.Services.Logger,
			FetchCooldown:     jobs.FetchCooldown,
			FetchPollInterval: jobs.FetchPollInterval,
			Queues:            map[string]river.QueueConfig{jobs.QueueLedger: {MaxWorkers: 2}},
			Workers:           workers,
		})
		require.NoError(t, err)
	}
	return &ledgerJobsBundle{ctx: k.Ctx, cfg: k.Config, pool: k.Pool, store: k.Store, svc: k.Services.Ledger, client: client}
}

func (b *ledgerJobsBundle) start(t *testing.T) {
	t.Helper()
	testkit.Start(t, b.client)
}

func (b *ledgerJobsBundle) createAccount(t *testing.T, code, typ string) *ledger.Account {
	t.Helper()
	a, _, err := b.svc.CreateAccount(b.ctx, ledger.AccountInput{Code: code, Name: code, Type: typ, Currency: "CNY"})
	require.NoError(t, err)
	return a
}

func (b *ledgerJobsBundle) account(t *testing.T, code string) *ledger.Account {
	t.Helper()
	a, err := b.svc.GetAccount(b.ctx, code, "")
	require.NoError(t, err)
	return a
}

func (b *ledgerJobsBundle) count(t *testing.T, query string, args ...any) int64 {
	t.Helper()
	var n int64
	require.NoError(t, b.pool.QueryRow(b.ctx, query, args...).Scan(&n))
	return n
}

// waitLedgerDrained polls until no posting is pending and no ledger job is
// left to run.
func (b *ledgerJobsBundle) waitLedgerDrained(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pending := b.count(t, "SELECT count(*) FROM ledger_posting_state WHERE applied_at IS NULL")
		live := b.count(t, "SELECT count(*) FROM river_job WHERE kind LIKE 'ledger.%' AND state NOT IN ('completed', 'cancelled', 'discarded')")
		if pending == 0 && live == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("ledger not drained after %s: %d pending postings, %d live ledger jobs", timeout, pending, live)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitJobFinalized polls until the job is completed, cancelled or discarded.
func (b *ledgerJobsBundle) waitJobFinalized(t *testing.T, id int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for b.count(t, "SELECT count(*) FROM river_job WHERE id = $1 AND finalized_at IS NULL", id) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("job %d not finalized after %s", id, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// requireNoLedgerJobErrors fails if any ledger job errored (a deadlock, a
// constraint violation) even once.
func (b *ledgerJobsBundle) requireNoLedgerJobErrors(t *testing.T) {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, "SELECT kind || ' ' || state || ' ' || coalesce(errors::text, '') FROM river_job WHERE kind LIKE 'ledger.%' AND (coalesce(array_length(errors, 1), 0) > 0 OR state IN ('discarded', 'retryable', 'cancelled'))")
	require.NoError(t, err)
	bad, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.Empty(t, bad)
}

// TestLedgerApplyConcurrentHotAccounts is the ledger's headline invariant
// (§5): 50 writers × 100 entries on the same two accounts, half urgent,
// with the real workers applying concurrently; once the queue drains every
// posting is applied exactly once and every balance is the sum of its
// postings.
func TestLedgerApplyConcurrentHotAccounts(t *testing.T) {
	t.Parallel()
	b := setupLedgerJobs(t, ledgerJobsOpts{})
	b.start(t)
	b.createAccount(t, "hot:a", "ASSET")
	b.createAccount(t, "hot:b", "LIABILITY")

	const writers, perWriter = 50, 100
	amount := func(g, j int) int64 { return int64(1 + (g*perWriter+j)%997) }
	var want int64
	for g := range writers {
		for j := range perWriter {
			want += amount(g, j)
		}
	}

	started := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for g := range writers {
		wg.Go(func() {
			for j := range perWriter {
				k := amount(g, j)
				_, created, err := b.svc.Post(b.ctx, ledger.EntryInput{
					IdempotencyKey: fmt.Sprintf("hot-%d-%d", g, j),
					Urgent:         (g+j)%2 == 0,
					Postings:       []ledger.PostingInput{{Account: "hot:a", AmountMinor: k}, {Account: "hot:b", AmountMinor: -k}},
				})
				if err == nil && !created {
					err = errors.New("entry was not created")
				}
				if err != nil {
					errs[g] = fmt.Errorf("writer %d entry %d: %w", g, j, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	t.Logf("wrote %d entries in %s", writers*perWriter, time.Since(started))

	// Non-urgent entries wait for the sweep; run it now instead of in a
	// minute.
	_, err := b.client.Insert(b.ctx, ledger.SweepArgs{}, nil)
	require.NoError(t, err)
	b.waitLedgerDrained(t, 60*time.Second)
	t.Logf("drained %s after start", time.Since(started))

	a, l := b.account(t, "hot:a"), b.account(t, "hot:b")
	require.Equal(t, want, a.BalanceMinor)
	require.Equal(t, -want, l.BalanceMinor)
	require.Zero(t, a.PendingCount)
	require.Zero(t, l.PendingCount)
	require.EqualValues(t, writers*perWriter, a.AppliedPostings)
	require.EqualValues(t, writers*perWriter, l.AppliedPostings)
	require.EqualValues(t, 0, b.count(t, "SELECT sum(balance_minor) FROM ledger_account"))
	require.EqualValues(t, 2*writers*perWriter, b.count(t, "SELECT count(*) FROM ledger_posting_state WHERE applied_at IS NOT NULL"))
	require.EqualValues(t, 0, b.count(t, "SELECT count(*) FROM ledger_posting_state WHERE applied_at IS NULL"))
	require.EqualValues(t, writers*perWriter, b.count(t, "SELECT count(*) FROM ledger_entry_state WHERE status = 'APPLIED' AND pending_postings = 0 AND applied_at IS NOT NULL"))
	require.EqualValues(t, 0, b.count(t, "SELECT count(*) FROM ledger_entry_state WHERE status <> 'APPLIED' OR pending_postings <> 0"))
	require.EqualValues(t, 0, b.count(t, `SELECT count(*) FROM ledger_account a
		WHERE a.applied_postings <> (SELECT count(*) FROM ledger_posting p WHERE p.account_id = a.id)`))

	tb, err := b.svc.TrialBalance(b.ctx)
	require.NoError(t, err)
	require.True(t, tb.Balanced, "%+v", tb)
	require.Empty(t, tb.Mismatches)
	b.requireNoLedgerJobErrors(t)
}

// TestLedgerApplyUrgentWithoutSweep: urgent entries are applied by the jobs
// they enqueue, never left for the sweep, even while those jobs are
// running and draining. The entries have three legs, so the three
// accounts' jobs count down the same entries concurrently (they must queue
// on the entry locks, not deadlock). The client runs no periodic sweep.
func TestLedgerApplyUrgentWithoutSweep(t *testing.T) {
	t.Parallel()
	b := setupLedgerJobs(t, ledgerJobsOpts{noPeriodic: true})
	b.start(t)
	b.createAccount(t, "urgent:a", "ASSET")
	b.createAccount(t, "urgent:b", "LIABILITY")
	b.createAccount(t, "urgent:c", "INCOME")

	const writers, perWriter = 20, 50
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for g := range writers {
		wg.Go(func() {
			for j := range perWriter {
				k := int64(1 + (g*perWriter+j)%13)
				_, _, err := b.svc.Post(b.ctx, ledger.EntryInput{
					IdempotencyKey: fmt.Sprintf("urgent-%d-%d", g, j),
					Urgent:         true,
					Postings: []ledger.PostingInput{
						{Account: "urgent:a", AmountMinor: 2 * k}, {Account: "urgent:b", AmountMinor: -k}, {Account: "urgent:c", AmountMinor: -k},
					},
				})
				if err != nil {
					errs[g] = fmt.Errorf("writer %d entry %d: %w", g, j, err)
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	b.waitLedgerDrained(t, 20*time.Second)

	// A second wave once the jobs have finished and the accounts are idle
	// again must get jobs of its own.
	for i := range 3 {
		_, _, err := b.svc.Post(b.ctx, ledger.EntryInput{
			IdempotencyKey: fmt.Sprintf("urgent-late-%d", i),
			Urgent:         true,
			Postings:       []ledger.PostingInput{{Account: "urgent:a", AmountMinor: 2}, {Account: "urgent:b", AmountMinor: -1}, {Account: "urgent:c", AmountMinor: -1}},
		})
		require.NoError(t, err)
		b.waitLedgerDrained(t, 20*time.Second)
	}
	require.EqualValues(t, 0, b.count(t, "SELECT count(*) FROM river_job WHERE kind = 'ledger.sweep'"), "no sweep helped")

	a := b.account(t, "urgent:a")
	require.Equal(t, a.BalanceMinor, -b.account(t, "urgent:b").BalanceMinor-b.account(t, "urgent:c").BalanceMinor)
	require.EqualValues(t, writers*perWriter+3, a.AppliedPostings)
	require.EqualValues(t, 0, b.count(t, "SELECT sum(balance_minor) FROM ledger_account"))
	require.EqualValues(t, writers*perWriter+3, b.count(t, "SELECT count(*) FROM ledger_entry_state WHERE status = 'APPLIED' AND pending_postings = 0"))
	tb, err := b.svc.TrialBalance(b.ctx)
	require.NoError(t, err)
	require.True(t, tb.Balanced, "%+v", tb)
	b.requireNoLedgerJobErrors(t)
}

// TestLedgerApplyWorkerCrashMidBatch: a batch whose transaction never
// commits applies nothing; the worker then applies every posting exactly
// once, and running it again changes nothing.
func TestLedgerApplyWorkerCrashMidBatch(t *testing.T) {
	t.Parallel()
	b := setupLedgerJobs(t, ledgerJobsOpts{})
	a := b.createAccount(t, "crash:a", "ASSET")
	l := b.createAccount(t, "crash:b", "LIABILITY")
	const entries = 30
	var want int64
	for i := range entries {
		k := int64(100 + i)
		want += k
		_, _, err := b.svc.Post(b.ctx, ledger.EntryInput{
			IdempotencyKey: fmt.Sprintf("crash-%d", i),
			Postings:       []ledger.PostingInput{{Account: a.Code, AmountMinor: k}, {Account: l.Code, AmountMinor: -k}},
		})
		require.NoError(t, err)
	}
	requireUntouched := func(t *testing.T) {
		t.Helper()
		for _, code := range []string{a.Code, l.Code} {
			acc := b.account(t, code)
			require.Zero(t, acc.BalanceMinor, code)
			require.Zero(t, acc.AppliedPostings, code)
			require.EqualValues(t, entries, acc.PendingCount, code)
		}
		require.EqualValues(t, 2*entries, b.count(t, "SELECT count(*) FROM ledger_posting_state WHERE applied_at IS NULL"))
		require.EqualValues(t, entries, b.count(t, "SELECT count(*) FROM ledger_entry_state WHERE status = 'PENDING' AND pending_postings = 2"))
	}

	// A worker that dies after its batch but before COMMIT: the error
	// rolls the batch back.
	errCrash := errors.New("crash")
	err := b.store.InTx(b.ctx, func(tx *db.Tx) error {
		res, err := ledger.ApplyBatchTx(b.ctx, tx, a.ID, 1000)
		require.NoError(t, err)
		require.Equal(t, ledger.ApplyResult{Applied: entries, TotalMinor: want}, res)
		return errCrash
	})
	require.ErrorIs(t, err, errCrash)
	requireUntouched(t)

	// Its context cancelled (shutdown, timeout) before COMMIT: pgx never
	// sends the COMMIT and drops the connection.
	ctx, cancel := context.WithCancel(b.ctx)
	err = b.store.InTx(ctx, func(tx *db.Tx) error {
		res, err := ledger.ApplyBatchTx(ctx, tx, l.ID, 1000)
		require.NoError(t, err)
		require.Equal(t, entries, res.Applied)
		cancel()
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	requireUntouched(t)

	// The real worker picks the postings up.
	b.start(t)
	for _, acc := range []*ledger.Account{a, l} {
		_, err := b.client.Insert(b.ctx, ledger.ApplyArgs{AccountID: acc.ID}, nil)
		require.NoError(t, err)
	}
	b.waitLedgerDrained(t, 30*time.Second)

	type snapshot struct {
		balance, applied int64
		updatedAt        time.Time
	}
	snap := func() (map[string]snapshot, time.Time) {
		out := map[string]snapshot{}
		for _, code := range []string{a.Code, l.Code} {
			acc := b.account(t, code)
			out[code] = snapshot{acc.BalanceMinor, acc.AppliedPostings, acc.UpdatedAt}
		}
		var last time.Time
		require.NoError(t, b.pool.QueryRow(b.ctx, "SELECT max(applied_at) FROM ledger_posting_state").Scan(&last))
		return out, last
	}
	before, lastApplied := snap()
	require.Equal(t, snapshot{want, entries, before[a.Code].updatedAt}, before[a.Code])
	require.Equal(t, snapshot{-want, entries, before[l.Code].updatedAt}, before[l.Code])
	require.EqualValues(t, entries, b.count(t, "SELECT count(*) FROM ledger_entry_state WHERE status = 'APPLIED' AND pending_postings = 0"))

	// Again: nothing left to apply, nothing changes.
	for _, acc := range []*ledger.Account{a, l} {
		res, err := b.client.Insert(b.ctx, ledger.ApplyArgs{AccountID: acc.ID}, nil)
		require.NoError(t, err)
		require.False(t, res.UniqueSkippedAsDuplicate)
		b.waitJobFinalized(t, res.Job.ID, 30*time.Second)
		require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM river_job WHERE id = $1 AND state = 'completed'", res.Job.ID))
	}
	after, lastAppliedAfter := snap()
	require.Equal(t, before, after)
	require.Equal(t, lastApplied, lastAppliedAfter)
	tb, err := b.svc.TrialBalance(b.ctx)
	require.NoError(t, err)
	require.True(t, tb.Balanced, "%+v", tb)
	b.requireNoLedgerJobErrors(t)
}

// TestLedgerApplyWorkerDrainsInBatches: one job run drains a hot account
// in several batches (it loops until a batch comes back short) rather than
// one posting or one batch per job.
func TestLedgerApplyWorkerDrainsInBatches(t *testing.T) {
	t.Parallel()
	const (
		batch    = 100
		postings = 1050
		perEntry = 50 // hot postings per entry, each with a matching sink posting
	)
	b := setupLedgerJobs(t, ledgerJobsOpts{worker: &jobs.ApplyWorker{BatchSize: batch}})
	hot := b.createAccount(t, "batch:hot", "ASSET")
	sink := b.createAccount(t, "batch:sink", "LIABILITY")
	var want int64
	err := b.store.InTx(b.ctx, func(tx *db.Tx) error {
		for e := range postings / perEntry {
			in := ledger.EntryInput{IdempotencyKey: fmt.Sprintf("batch-%d", e)}
			for k := range perEntry {
				amount := int64(e*perEntry + k + 1)
				want += amount
				in.Postings = append(in.Postings, ledger.PostingInput{Account: hot.Code, AmountMinor: amount}, ledger.PostingInput{Account: sink.Code, AmountMinor: -amount})
			}
			if _, _, err := ledger.PostTx(b.ctx, tx, in); err != nil {
				return err
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.EqualValues(t, postings, b.account(t, hot.Code).PendingCount)

	res, err := b.client.Insert(b.ctx, ledger.ApplyArgs{AccountID: hot.ID}, nil)
	require.NoError(t, err)
	b.start(t)
	b.waitJobFinalized(t, res.Job.ID, 30*time.Second)

	require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM river_job WHERE id = $1 AND state = 'completed' AND attempt = 1", res.Job.ID))
	require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM river_job WHERE kind = 'ledger.apply'"), "one job run, no follow-up job")
	got := b.account(t, hot.Code)
	require.Equal(t, want, got.BalanceMinor)
	require.EqualValues(t, postings, got.AppliedPostings)
	require.Zero(t, got.PendingCount)
	// Each batch is its own transaction, so its postings share one
	// applied_at (now() is the transaction's start): 10 full batches and
	// the short one that ends the run.
	require.EqualValues(t, postings/batch+1, b.count(t, "SELECT count(DISTINCT applied_at) FROM ledger_posting_state WHERE account_id = $1", hot.ID))
	// The sink side is untouched; each entry has counted down its hot half.
	s := b.account(t, sink.Code)
	require.Zero(t, s.BalanceMinor)
	require.EqualValues(t, postings, s.PendingCount)
	require.EqualValues(t, postings/perEntry, b.count(t, "SELECT count(*) FROM ledger_entry_state WHERE status = 'PENDING' AND pending_postings = $1", perEntry))
	b.requireNoLedgerJobErrors(t)
}

// TestLedgerSweepWorker: the periodic sweep enqueues ledger.apply for the
// accounts with pending postings, whose jobs then apply them.
func TestLedgerSweepWorker(t *testing.T) {
	t.Parallel()
	b := setupLedgerJobs(t, ledgerJobsOpts{})
	a := b.createAccount(t, "sweep:a", "ASSET")
	l := b.createAccount(t, "sweep:b", "LIABILITY")
	b.createAccount(t, "sweep:idle", "ASSET")
	for i := range 5 {
		_, _, err := b.svc.Post(b.ctx, ledger.EntryInput{
			IdempotencyKey: fmt.Sprintf("sweep-%d", i),
			Postings:       []ledger.PostingInput{{Account: a.Code, AmountMinor: 10}, {Account: l.Code, AmountMinor: -10}},
		})
		require.NoError(t, err)
	}
	require.EqualValues(t, 0, b.count(t, "SELECT count(*) FROM river_job"))

	// The periodic sweep runs on start.
	b.start(t)
	b.waitLedgerDrained(t, 30*time.Second)
	require.EqualValues(t, 1, b.count(t, "SELECT count(*) FROM river_job WHERE kind = 'ledger.sweep' AND state = 'completed'"))
	rows, err := b.pool.Query(b.ctx, "SELECT (args->>'account_id')::bigint FROM river_job WHERE kind = 'ledger.apply' ORDER BY 1")
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	require.Equal(t, []int64{a.ID, l.ID}, ids)
	require.EqualValues(t, 50, b.account(t, a.Code).BalanceMinor)
	require.EqualValues(t, -50, b.account(t, l.Code).BalanceMinor)
	b.requireNoLedgerJobErrors(t)
}
