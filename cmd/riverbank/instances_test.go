package main

// The several-instances test of SPEC §10: three `riverbank serve`
// processes on one database share mixed load, a batch and a
// close-of-business catch-up; the River leader is killed with SIGKILL
// mid-run; leadership must move, periodic jobs must have run once per
// interval on whichever process led (never doubled, never skipped beyond
// the leaderless gap), the jobs the killed process held must be rescued
// and completed, and every accepted request must have taken effect exactly
// once.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"riverbank/internal/bench"
	"riverbank/internal/cob"
	"riverbank/internal/collection"
	"riverbank/internal/events"
	"riverbank/internal/ledger"
	"riverbank/internal/orders"
	"riverbank/internal/testdb"
	"riverbank/internal/webhook"
	"riverbank/jobs"
)

const (
	miInstances = 3
	miLoaders   = 6
	// Close of business: miCOBLoans manufacturer-interest loans that start
	// miCOBDays before today, so the scheduler's catch-up closes
	// miCOBDays dates one after another, each in chunks of miCOBChunk
	// loan ids — long enough to be mid-run when the leader dies.
	miCOBLoans = 300
	miCOBDays  = 20
	miCOBChunk = 25
	// Principal and rate make one day's interest exactly miCOBDaily.
	miCOBPrincipal = 3_650_000
	miCOBRateBps   = 1000
	miCOBDaily     = 1000
	miBatchItems   = 1000
	miStock        = 1_000_000
	miPrice        = 100
	// Periodic intervals of the test (production: 1m, 10m, 2s, 00:10).
	miSweepEvery    = 2 * time.Second
	miPruneEvery    = 3 * time.Second
	miDispatchEvery = webhook.DefaultDispatchInterval
	miCOBEvery      = 5 * time.Second
	// Jobs a killed process left running are rescued after 2 × this, which
	// is below the shortest possible leader move (River's leader TTL of
	// 15 s minus its 5 s re-election interval), so the new leader's first
	// rescuer pass finds them all.
	miJobTimeout = 4 * time.Second
)

// longTimeout are the periodic kinds whose workers set their own timeout,
// longer than this test: River's rescuer leaves a killed process's run of
// them `running` until that timeout has passed (it does not block the next
// run: none of them is unique).
var longTimeout = map[string]time.Duration{
	collection.KindSweep:      (&jobs.CaseSweepWorker{}).Timeout(nil),
	events.PruneArgs{}.Kind(): (&jobs.EventsPruneWorker{}).Timeout(nil),
	webhook.KindPrune:         (&jobs.WebhookPruneWorker{}).Timeout(nil),
}

// miEnv are the settings of every instance; setup adds COB off.
func miEnv() []string {
	return []string{
		"RIVERBANK_WORKERS=6", // 3 × a 52-connection pool stays well below max_connections
		"RIVERBANK_COB_SCHEDULE=@every " + miCOBEvery.String(),
		fmt.Sprintf("RIVERBANK_COB_CHUNK_SIZE=%d", miCOBChunk),
		"RIVERBANK_SWEEP_INTERVAL=" + miSweepEvery.String(),
		"RIVERBANK_PRUNE_INTERVAL=" + miPruneEvery.String(),
		"RIVERBANK_EVENT_RETENTION=1m",
		"RIVERBANK_JOB_TIMEOUT=" + miJobTimeout.String(),
		"RIVERBANK_ORDER_PAYMENT_TIMEOUT=5s",
		"RIVERBANK_SHUTDOWN_TIMEOUT=10s",
		"RIVERBANK_LOG_LEVEL=warn",
	}
}

// miReq is one create request: its body is re-sent unchanged until an
// instance answers it, so a lost answer is retried on another instance
// and idempotency makes the retry safe.
type miReq struct {
	kind   string // entry, order, pay, loan, repayment
	key    string // idempotency key, identifier, loan_no or payment_id
	path   string
	body   []byte
	amount int64 // entry: debit of mi:a; order: quantity; pay: order id; repayment: amount
	status int   // final status
	id     int64 // final id
	tries  int
}

// miHarness runs the instances and the load.
type miHarness struct {
	t      *testing.T
	pool   *pgxpool.Pool
	procs  []*bench.Process
	client *http.Client
	alive  []atomic.Bool
	next   atomic.Uint64
	served []atomic.Int64
	busy   []atomic.Int64 // nanoseconds spent in answered requests, per instance

	mu         sync.Mutex
	reqs       []*miReq
	unexpected []string
}

func (h *miHarness) post(i int, method, path string, body []byte) (int, []byte, error) {
	p := h.procs[i]
	req, err := http.NewRequest(method, p.BaseURL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+p.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// send delivers r to the live instances in turn until one answers; want
// are the answers a live server gives (a retry after a lost answer may
// also get 200 for a create). It returns false on any other answer.
func (h *miHarness) send(r *miReq, want ...int) bool {
	for {
		i := -1
		for range len(h.procs) {
			c := int(h.next.Add(1)-1) % len(h.procs)
			if h.alive[c].Load() {
				i = c
				break
			}
		}
		if i < 0 {
			h.fail("%s %s: no live instance", r.kind, r.key)
			return false
		}
		r.tries++
		t0 := time.Now()
		status, data, err := h.post(i, http.MethodPost, r.path, r.body)
		if err != nil {
			// The instance died under the request: the outcome is
			// unknown, so the same request goes to another instance.
			if r.tries > 20 {
				h.fail("%s %s: %d transport errors, last %v", r.kind, r.key, r.tries, err)
				return false
			}
			time.Sleep(20 * time.Millisecond)
			continue
		}
		h.served[i].Add(1)
		h.busy[i].Add(int64(time.Since(t0)))
		ok := slices.Contains(want, status) || (r.tries > 1 && status == http.StatusOK)
		if !ok {
			h.fail("%s %s on instance %d (try %d): %d %s", r.kind, r.key, i, r.tries, status, data)
			return false
		}
		var out struct {
			ID int64 `json:"id"`
		}
		_ = json.Unmarshal(data, &out)
		r.status, r.id = status, out.ID
		h.mu.Lock()
		h.reqs = append(h.reqs, r)
		h.mu.Unlock()
		return true
	}
}

// servedSummary is how many requests each instance answered and their
// mean latency.
func (h *miHarness) servedSummary() string {
	var parts []string
	for i := range h.served {
		n := h.served[i].Load()
		mean := time.Duration(0)
		if n > 0 {
			mean = time.Duration(h.busy[i].Load() / n)
		}
		parts = append(parts, fmt.Sprintf("instance %d answered %d (mean %s)", i, n, mean.Round(time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

func (h *miHarness) fail(format string, args ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.unexpected = append(h.unexpected, fmt.Sprintf(format, args...))
}

func miBody(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// miLeader is one leadership term seen in river_leader.
type miLeader struct {
	id        string
	electedAt time.Time // database clock
	seenAt    time.Time // test clock, when the poller first saw it
}

// watchLeaders polls river_leader until ctx ends and records every term.
func watchLeaders(ctx context.Context, pool *pgxpool.Pool) func() []miLeader {
	var (
		mu    sync.Mutex
		terms []miLeader
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			var l miLeader
			err := pool.QueryRow(ctx, "SELECT leader_id, elected_at FROM river_leader").Scan(&l.id, &l.electedAt)
			if err == nil {
				mu.Lock()
				if n := len(terms); n == 0 || terms[n-1].id != l.id || !terms[n-1].electedAt.Equal(l.electedAt) {
					l.seenAt = time.Now()
					terms = append(terms, l)
				}
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(25 * time.Millisecond):
			}
		}
	}()
	return func() []miLeader {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(terms)
	}
}

func (h *miHarness) procOf(clientID string) int {
	for i, p := range h.procs {
		if strings.Contains(clientID, fmt.Sprintf("_p%d_", p.PID)) {
			return i
		}
	}
	return -1
}

func dbNow(t *testing.T, pool *pgxpool.Pool) time.Time {
	t.Helper()
	var now time.Time
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT clock_timestamp()").Scan(&now))
	return now
}

func TestSeveralInstancesKillLeader(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary and runs three server processes for about a minute; skipped in -short")
	}
	serialProcessTest(t)
	begin := time.Now()
	bin := buildRiverbank(t)
	t.Logf("built riverbank in %s", time.Since(begin).Round(time.Millisecond))
	dsn, pool := testdb.NewDB(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leaders := watchLeaders(ctx, pool)
	token := randomHex(t, 16)
	transport := &http.Transport{MaxIdleConnsPerHost: 4 * miLoaders}
	t.Cleanup(transport.CloseIdleConnections)
	h := &miHarness{t: t, pool: pool, client: &http.Client{Timeout: 20 * time.Second, Transport: transport}}
	// start may run in any goroutine; the caller checks the error.
	var cleanupMu sync.Mutex
	start := func(env []string) (*bench.Process, error) {
		p, err := bench.StartServerProcess(ctx, bench.ProcessOptions{Binary: bin, DatabaseURL: dsn, Token: token, Env: env})
		if err == nil {
			cleanupMu.Lock()
			t.Cleanup(func() { _ = p.Kill() })
			cleanupMu.Unlock()
		}
		return p, err
	}
	today := time.Now().UTC().Truncate(24 * time.Hour)
	yesterday := today.AddDate(0, 0, -1)
	cobStart := today.AddDate(0, 0, -miCOBDays)

	// Setup on one process with the automatic close off, so the
	// scheduler sees every close-of-business loan at once.
	setupAt := time.Now()
	setup, err := start(append(miEnv(), "RIVERBANK_COB_SCHEDULE=off"))
	require.NoError(t, err)
	h.procs = []*bench.Process{setup}
	h.alive = make([]atomic.Bool, 1)
	h.served = make([]atomic.Int64, 1)
	h.busy = make([]atomic.Int64, 1)
	h.alive[0].Store(true)
	mustPut := func(method, path string, body any, want int) {
		t.Helper()
		status, data, err := h.post(0, method, path, miBody(t, body))
		require.NoError(t, err)
		require.Equal(t, want, status, "%s %s: %s", method, path, data)
	}
	mustPut(http.MethodPost, "/v1/accounts", map[string]any{"code": "mi:a", "name": "MI A", "type": "ASSET", "currency": "CNY"}, http.StatusCreated)
	mustPut(http.MethodPost, "/v1/accounts", map[string]any{"code": "mi:b", "name": "MI B", "type": "LIABILITY", "currency": "CNY"}, http.StatusCreated)
	mustPut(http.MethodPut, "/v1/products/MI-1", map[string]any{"name": "MI product", "price_minor": miPrice, "currency": "CNY", "stock": miStock}, http.StatusCreated)
	for g := range miLoaders {
		mustPut(http.MethodPut, fmt.Sprintf("/v1/credit-lines/mi-ld-%d", g), map[string]any{"limit_minor": 1_000_000_000, "currency": "CNY"}, http.StatusCreated)
	}
	const cobBorrowers = 10
	for b := range cobBorrowers {
		mustPut(http.MethodPut, fmt.Sprintf("/v1/credit-lines/mi-cob-%d", b), map[string]any{"limit_minor": int64(miCOBLoans) * miCOBPrincipal, "currency": "CNY"}, http.StatusCreated)
	}
	var wg sync.WaitGroup
	var nextLoan atomic.Int64
	for range 8 {
		wg.Go(func() {
			for i := nextLoan.Add(1) - 1; i < miCOBLoans; i = nextLoan.Add(1) - 1 {
				r := &miReq{kind: "cob-loan", key: fmt.Sprintf("mi-cob-%d", i), path: "/v1/loans", body: miBody(t, map[string]any{
					"loan_no": fmt.Sprintf("mi-cob-%d", i), "borrower_id": fmt.Sprintf("mi-cob-%d", i%cobBorrowers), "currency": "CNY",
					"principal_minor": miCOBPrincipal, "annual_rate_bps": miCOBRateBps, "penalty_rate_bps": 1800, "late_fee_minor": 0,
					"start_date": cobStart.Format(time.DateOnly), "due_date": today.AddDate(1, 0, 0).Format(time.DateOnly),
					"interest_mode": "MANUFACTURER", "dealer_id": "mi-dealer", "manufacturer_id": "mi-maker",
				})}
				h.send(r, http.StatusCreated)
			}
		})
	}
	wg.Wait()
	require.Empty(t, h.unexpected)
	require.NoError(t, setup.Stop(30*time.Second), "setup instance stops cleanly (and resigns leadership)")
	setupStoppedAt := dbNow(t, pool)
	h.reqs = nil // the close-of-business loans are checked through the runs
	t.Logf("setup: %d close-of-business loans from %s in %s", miCOBLoans, cobStart.Format(time.DateOnly), time.Since(setupAt).Round(time.Millisecond))

	// Three instances on the one database.
	h.procs = make([]*bench.Process, miInstances)
	h.alive = make([]atomic.Bool, miInstances)
	h.served = make([]atomic.Int64, miInstances)
	h.busy = make([]atomic.Int64, miInstances)
	startedAt := time.Now()
	startErrs := make([]error, miInstances)
	for i := range miInstances {
		wg.Go(func() { h.procs[i], startErrs[i] = start(miEnv()) })
	}
	wg.Wait()
	for _, err := range startErrs {
		require.NoError(t, err)
	}
	for i := range miInstances {
		h.alive[i].Store(true)
	}
	t.Logf("%d instances ready in %s (pids %d, %d, %d)", miInstances, time.Since(startedAt).Round(time.Millisecond), h.procs[0].PID, h.procs[1].PID, h.procs[2].PID)
	leader := -1
	var leaderID string
	waitUntil(t, 30*time.Second, "one of the instances is elected leader", func() bool {
		ls := leaders()
		if len(ls) == 0 {
			return false
		}
		leaderID = ls[len(ls)-1].id
		leader = h.procOf(leaderID)
		return leader >= 0
	})
	t.Logf("leader: instance %d (%s)", leader, leaderID)

	// Mixed load through all instances until stop is closed.
	stop := make(chan struct{})
	loadStart := time.Now()
	for g := range miLoaders {
		wg.Go(func() { h.load(g, stop, today) })
	}

	// Wait for the catch-up to be under way, submit the batch, and kill the
	// leader while both run and it holds jobs.
	waitUntil(t, 60*time.Second, "the scheduler's close-of-business catch-up has closed a date", func() bool {
		return queryInt(t, pool, "SELECT count(*) FROM cob_run WHERE status = 'COMPLETED'") >= 1
	})
	batchItems := make([]json.RawMessage, miBatchItems)
	var batchTotal int64
	for i := range batchItems {
		k := int64(1 + i%89)
		batchTotal += k
		batchItems[i] = miBody(t, map[string]any{
			"idempotency_key": fmt.Sprintf("mi-batch-%d", i), "description": "batch item", "urgent": false,
			"postings": []map[string]any{{"account": "mi:a", "amount_minor": k}, {"account": "mi:b", "amount_minor": -k}},
		})
	}
	batchReq := &miReq{kind: "batch", key: "mi-batch", path: "/v1/batches", body: miBody(t, map[string]any{"idempotency_key": "mi-batch", "operation": "journal_entry", "items": batchItems})}
	require.True(t, h.send(batchReq, http.StatusAccepted), "batch accepted: %v", h.unexpected)
	batchID := batchReq.id
	var (
		heldAtKill                   int64
		batchDoneAtKill, cobDoneDays int64
	)
	waitUntil(t, 60*time.Second, "the batch is under way and the leader runs jobs", func() bool {
		batchDoneAtKill = queryInt(t, pool, "SELECT count(*) FROM batch_item WHERE batch_id = $1 AND status <> 'PENDING'", batchID)
		heldAtKill = queryInt(t, pool, "SELECT count(*) FROM river_job WHERE state = 'running' AND attempted_by[array_upper(attempted_by, 1)] = $1", leaderID)
		return time.Since(loadStart) > 3*time.Second && batchDoneAtKill > 0 && heldAtKill > 0
	})
	t.Logf("before the kill: %s", h.servedSummary())
	killAt := time.Now()
	require.NoError(t, h.procs[leader].Kill())
	h.alive[leader].Store(false)
	killAtDB := dbNow(t, pool)
	cobDoneDays = queryInt(t, pool, "SELECT count(*) FROM cob_run WHERE status = 'COMPLETED'")
	cobRunning := queryInt(t, pool, "SELECT count(*) FROM cob_run WHERE status = 'RUNNING'")
	type orphan struct {
		id      int64
		kind    string
		attempt int
	}
	var orphans []orphan
	rows, err := pool.Query(ctx, "SELECT id, kind, attempt FROM river_job WHERE state = 'running' AND attempted_by[array_upper(attempted_by, 1)] = $1 ORDER BY id", leaderID)
	require.NoError(t, err)
	for rows.Next() {
		var o orphan
		require.NoError(t, rows.Scan(&o.id, &o.kind, &o.attempt))
		orphans = append(orphans, o)
	}
	require.NoError(t, rows.Err())
	orphanKinds := map[string]int{}
	var orphanIDs []int64 // the ones River rescues within the test
	for _, o := range orphans {
		orphanKinds[o.kind]++
		if longTimeout[o.kind] == 0 {
			orphanIDs = append(orphanIDs, o.id)
		}
	}
	t.Logf("killed leader (instance %d, pid %d) %s after the load started: batch %d/%d items done, close of business %d of %d dates done (%d running), %d jobs left running by the dead process: %v",
		leader, h.procs[leader].PID, killAt.Sub(loadStart).Round(time.Millisecond), batchDoneAtKill, miBatchItems, cobDoneDays, miCOBDays, cobRunning, len(orphans), orphanKinds)
	require.NotEmpty(t, orphans, "the killed process held jobs")
	require.Less(t, batchDoneAtKill, int64(miBatchItems), "the batch was mid-run at the kill")
	require.EqualValues(t, 1, cobRunning, "a close-of-business run was mid-run at the kill (raise miCOBDays if the catch-up finished first)")

	// Leadership moves to a survivor.
	var newLeader miLeader
	waitUntil(t, 60*time.Second, "leadership moves after the leader is killed", func() bool {
		ls := leaders()
		newLeader = ls[len(ls)-1]
		return newLeader.id != leaderID
	})
	moved := newLeader.seenAt.Sub(killAt)
	newLeaderProc := h.procOf(newLeader.id)
	require.GreaterOrEqual(t, newLeaderProc, 0)
	require.NotEqual(t, leader, newLeaderProc)
	t.Logf("leadership moved to instance %d %s after the kill (elected_at − kill = %s; River's bound: leader TTL 15 s after the last re-election, then a bid every 5–6 s)",
		newLeaderProc, moved.Round(time.Millisecond), newLeader.electedAt.Sub(killAtDB).Round(time.Millisecond))

	// Keep the load on while the new leader's periodic jobs start, then
	// stop it and let everything drain.
	time.Sleep(max(3*time.Second, 2*miSweepEvery))
	close(stop)
	wg.Wait()
	loadFor := time.Since(loadStart)
	require.Empty(t, h.unexpected, "answers a live server should not give")
	counts := map[string]int{}
	retried := 0
	for _, r := range h.reqs {
		counts[r.kind]++
		if r.tries > 1 {
			retried++
		}
	}
	t.Logf("load: %v over %s, %d sent again after a lost answer; %s", counts, loadFor.Round(time.Millisecond), retried, h.servedSummary())
	for i := range miInstances {
		require.NotZero(t, h.served[i].Load(), "instance %d served requests", i)
	}

	drainStart := time.Now()
	drained := func() (bool, string) {
		waiting := queryInt(t, pool, `SELECT count(*) FROM river_job WHERE finalized_at IS NULL AND NOT (metadata @> '{"periodic": true}')`)
		pending := queryInt(t, pool, "SELECT count(*) FROM ledger_posting_state WHERE applied_at IS NULL")
		open := queryInt(t, pool, "SELECT count(*) FROM orders WHERE status IN ('CREATED', 'CONFIRMED')")
		closed := queryInt(t, pool, "SELECT count(*) FROM cob_run WHERE status = 'COMPLETED' AND trial_balance IS NOT NULL")
		batchOpen := queryInt(t, pool, "SELECT count(*) FROM batch WHERE status <> 'COMPLETED'")
		orphansLeft := queryInt(t, pool, "SELECT count(*) FROM river_job WHERE id = ANY($1) AND finalized_at IS NULL", orphanIDs)
		return waiting == 0 && pending == 0 && open == 0 && closed == miCOBDays && batchOpen == 0 && orphansLeft == 0,
			fmt.Sprintf("%d jobs unfinished, %d postings pending, %d orders open, %d of %d dates closed with trial balance, %d batches running, %d of the killed process's jobs unfinished",
				waiting, pending, open, closed, miCOBDays, batchOpen, orphansLeft)
	}
	for {
		ok, state := drained()
		if ok {
			break
		}
		if time.Since(drainStart) > 2*time.Minute {
			logJobs(t, pool, "jobs when the drain timed out")
			t.Fatalf("not drained after %s: %s", time.Since(drainStart).Round(time.Second), state)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("drained in %s", time.Since(drainStart).Round(time.Millisecond))
	checkAt := dbNow(t, pool)

	t.Run("jobs of the killed process were rescued and completed", func(t *testing.T) {
		for _, o := range orphans {
			var state string
			var attempt int
			var by []string
			require.NoError(t, pool.QueryRow(ctx, "SELECT state, attempt, attempted_by FROM river_job WHERE id = $1", o.id).Scan(&state, &attempt, &by))
			last := h.procOf(by[len(by)-1])
			if d := longTimeout[o.kind]; d > 0 {
				// River rescues a job only once its worker's own timeout
				// has passed; the next periodic run did its work.
				if state == "running" {
					require.Equal(t, leader, last, "job %d (%s)", o.id, o.kind)
					t.Logf("job %d (%s) of the killed process is rescued only %s after it started (its worker's timeout); not waited for", o.id, o.kind, d)
				} else {
					require.Equal(t, "completed", state, "job %d (%s)", o.id, o.kind)
				}
				continue
			}
			if o.kind == webhook.KindDispatch {
				// MaxAttempts 1: River's rescuer discards it; the next
				// dispatch (every 2 s) does its work.
				require.Contains(t, []string{"completed", "discarded"}, state, "job %d (%s)", o.id, o.kind)
				continue
			}
			require.Equal(t, "completed", state, "job %d (%s, attempt %d, attempted by %v) held by the killed process", o.id, o.kind, attempt, by)
			require.Greater(t, attempt, o.attempt, "job %d (%s) ran again after the rescue", o.id, o.kind)
			require.NotEqual(t, leader, last, "job %d (%s) completed by a survivor", o.id, o.kind)
		}
	})
	t.Run("every instance worked jobs", func(t *testing.T) {
		logRows(t, pool, "completed jobs by kind and process (kind, client, count)", `
			SELECT kind, attempted_by[array_upper(attempted_by, 1)], count(*) FROM river_job
			 WHERE state = 'completed' AND NOT (metadata @> '{"periodic": true}') GROUP BY 1, 2 ORDER BY 1, 2`)
		for i, p := range h.procs {
			n := queryInt(t, pool, `SELECT count(*) FROM river_job WHERE state = 'completed' AND attempted_by[array_upper(attempted_by, 1)] LIKE $1`,
				fmt.Sprintf("%%\\_p%d\\_%%", p.PID))
			require.NotZero(t, n, "instance %d completed jobs", i)
		}
	})
	t.Run("no job discarded", func(t *testing.T) {
		logRows(t, pool, "discarded jobs", "SELECT id, kind, attempt, errors FROM river_job WHERE state = 'discarded' ORDER BY id")
		require.Zero(t, queryInt(t, pool, "SELECT count(*) FROM river_job WHERE state = 'discarded' AND kind <> $1", webhook.KindDispatch))
	})

	terms := leaders()
	t.Run("periodic jobs ran once per interval on the leader", func(t *testing.T) {
		h.checkPeriodic(t, terms, setupStoppedAt, killAtDB, leaderID, checkAt)
	})

	t.Run("every accepted request took effect exactly once", func(t *testing.T) {
		h.checkEffects(t, batchTotal)
	})
	t.Run("batch done exactly once", func(t *testing.T) {
		var status string
		var total int64
		require.NoError(t, pool.QueryRow(ctx, "SELECT status, total FROM batch WHERE id = $1", batchID).Scan(&status, &total))
		require.Equal(t, "COMPLETED", status)
		require.EqualValues(t, miBatchItems, total)
		require.EqualValues(t, miBatchItems, queryInt(t, pool, "SELECT count(*) FROM batch_item WHERE batch_id = $1 AND status = 'SUCCEEDED'", batchID))
		require.EqualValues(t, miBatchItems, queryInt(t, pool, `
			SELECT count(DISTINCT e.id) FROM batch_item i JOIN ledger_entry e ON e.id = i.result_id
			 WHERE i.batch_id = $1 AND e.idempotency_key = 'mi-batch-' || i.idx`, batchID), "every item's result is its own entry")
		require.EqualValues(t, miBatchItems, queryInt(t, pool, "SELECT count(*) FROM ledger_entry WHERE idempotency_key LIKE 'mi-batch-%'"), "no entry twice")
	})
	t.Run("close of business closed every date exactly once", func(t *testing.T) {
		logRows(t, pool, "runs (date, chunks, loans done, started, completed)", `
			SELECT business_date, chunks_done || '/' || chunks_total, loans_done || '/' || loans_total, started_at, completed_at
			  FROM cob_run ORDER BY business_date DESC LIMIT 3`)
		require.EqualValues(t, miCOBDays, queryInt(t, pool, "SELECT count(*) FROM cob_run"))
		require.Zero(t, queryInt(t, pool, `
			SELECT count(*) FROM cob_run WHERE status <> 'COMPLETED' OR chunks_done <> chunks_total OR loans_done <> loans_total
			    OR loans_total <> $1 OR loans_failed <> 0 OR business_date < $2 OR business_date > $3
			    OR NOT (trial_balance @> '{"balanced": true}')`, miCOBLoans, cobStart, yesterday), "runs not complete, balanced and in range")
		require.Zero(t, queryInt(t, pool, `
			SELECT count(*) FROM cob_run r WHERE r.chunks_total <> (SELECT count(*) FROM cob_chunk c WHERE c.business_date = r.business_date)`),
			"one chunk row per chunk")
		// Each loan accrued exactly one day's interest per closed date.
		require.Zero(t, queryInt(t, pool, `
			SELECT count(*) FROM loan l WHERE l.loan_no LIKE 'mi-cob-%' AND (
			  l.last_closed_date <> $1 OR l.interest_outstanding_manufacturer_minor <> $2
			  OR l.month_interest_manufacturer_minor + coalesce((SELECT sum(m.interest_manufacturer_minor) FROM loan_accrual_month m WHERE m.loan_id = l.id), 0) <> $2
			  OR (SELECT count(*) FROM loan_accrual_month m WHERE m.loan_id = l.id) <> (SELECT count(DISTINCT m.month) FROM loan_accrual_month m WHERE m.loan_id = l.id))`,
			yesterday, int64(miCOBDays)*miCOBDaily), "loans whose accruals are not one day's interest per date")
	})
	t.Run("ledger balanced", func(t *testing.T) {
		require.Zero(t, queryInt(t, pool, "SELECT count(*) FROM ledger_posting_state WHERE applied_at IS NULL"))
		require.Zero(t, queryInt(t, pool, "SELECT count(*) FROM ledger_entry_state WHERE status <> 'APPLIED'"))
		require.Zero(t, queryInt(t, pool, `
			SELECT count(*) FROM (
			  SELECT a.id FROM ledger_account a LEFT JOIN ledger_posting p ON p.account_id = a.id
			   GROUP BY a.id HAVING a.balance_minor <> coalesce(sum(p.amount_minor), 0) OR a.applied_postings <> count(p.id)) m`),
			"accounts whose balance is not the sum of their postings")
		require.Zero(t, queryInt(t, pool, "SELECT count(*) FROM (SELECT currency FROM ledger_account GROUP BY 1 HAVING sum(balance_minor) <> 0) c"), "balances sum to zero per currency")
	})

	for i, p := range h.procs {
		if i != leader {
			require.NoError(t, p.Stop(30*time.Second), "instance %d stops cleanly", i)
		}
	}
	t.Logf("total %s (load %s, leader moved after %s)", time.Since(begin).Round(time.Millisecond), loadFor.Round(time.Millisecond), moved.Round(time.Millisecond))
}

// load is one loader: journal entries (urgent and not), orders (every
// third one paid), loans and repayments, in turn, until stop.
func (h *miHarness) load(g int, stop <-chan struct{}, today time.Time) {
	type loan struct {
		id     int64
		repaid int
	}
	var loans []*loan
	for n := 0; ; n++ {
		select {
		case <-stop:
			return
		default:
		}
		switch n % 6 {
		case 0, 3:
			k := int64(1 + (g*7919+n*31)%997)
			key := fmt.Sprintf("mi-e-%d-%d", g, n)
			h.send(&miReq{kind: "entry", key: key, path: "/v1/journal-entries", amount: k, body: miBody(h.t, map[string]any{
				"idempotency_key": key, "description": "mi load", "urgent": n%6 == 0,
				"postings": []map[string]any{{"account": "mi:a", "amount_minor": k}, {"account": "mi:b", "amount_minor": -k}},
			})}, http.StatusCreated)
		case 1, 4:
			q := int64(1 + (g+n)%3)
			ident := fmt.Sprintf("mi-o-%d-%d", g, n)
			r := &miReq{kind: "order", key: ident, path: "/v1/orders", amount: q, body: miBody(h.t, map[string]any{
				"buyer_id": fmt.Sprintf("mi-buyer-%d", g), "merchant_id": "mi-shop", "identifier": ident,
				"items": []map[string]any{{"sku": "MI-1", "quantity": q}},
			})}
			if !h.send(r, http.StatusCreated) || n%3 != 1 {
				continue
			}
			pay := "mi-pay-" + ident
			h.send(&miReq{kind: "pay", key: pay, path: fmt.Sprintf("/v1/orders/%d/pay", r.id), amount: r.id, body: miBody(h.t, map[string]any{
				"payment_id": pay, "amount_minor": q * miPrice,
			})}, http.StatusOK, http.StatusConflict)
		case 2:
			no := fmt.Sprintf("mi-l-%d-%d", g, n)
			r := &miReq{kind: "loan", key: no, path: "/v1/loans", body: miBody(h.t, map[string]any{
				"loan_no": no, "borrower_id": fmt.Sprintf("mi-ld-%d", g), "currency": "CNY", "principal_minor": 100_000,
				"annual_rate_bps": 850, "penalty_rate_bps": 1800, "late_fee_minor": 500,
				"start_date": today.Format(time.DateOnly), "due_date": today.AddDate(0, 3, 0).Format(time.DateOnly),
				"interest_mode": "DEALER", "dealer_id": "mi-dealer",
			})}
			if h.send(r, http.StatusCreated) {
				loans = append(loans, &loan{id: r.id})
			}
		case 5:
			var l *loan
			for _, c := range loans {
				if c.repaid < 3 {
					l = c
					break
				}
			}
			if l == nil {
				continue
			}
			l.repaid++
			ident := fmt.Sprintf("mi-r-%d-%d", g, n)
			h.send(&miReq{kind: "repayment", key: ident, path: fmt.Sprintf("/v1/loans/%d/repayments", l.id), amount: 10_000, body: miBody(h.t, map[string]any{
				"identifier": ident, "payer": "DEALER", "amount_minor": 10_000,
			})}, http.StatusCreated)
		}
	}
}

// checkEffects checks every accepted request against the database: each
// exists once with the id its answer gave, and nothing else exists.
func (h *miHarness) checkEffects(t *testing.T, batchTotal int64) {
	ctx := context.Background()
	pool := h.pool
	byKind := map[string][]*miReq{}
	for _, r := range h.reqs {
		byKind[r.kind] = append(byKind[r.kind], r)
	}
	keysIDs := func(kind string) ([]string, []int64) {
		var keys []string
		var ids []int64
		for _, r := range byKind[kind] {
			keys = append(keys, r.key)
			ids = append(ids, r.id)
		}
		return keys, ids
	}
	matched := func(sql string, kind string) int64 {
		keys, ids := keysIDs(kind)
		var n int64
		require.NoError(t, pool.QueryRow(ctx, sql, keys, ids).Scan(&n))
		return n
	}
	for _, kind := range []string{"entry", "order", "loan", "repayment"} {
		require.NotEmpty(t, byKind[kind], "the load sent %s requests", kind)
	}

	// Journal entries: each once, and mi:a holds exactly their sum plus
	// the batch's.
	require.EqualValues(t, len(byKind["entry"]), matched(`
		SELECT count(*) FROM ledger_entry e JOIN unnest($1::text[], $2::bigint[]) AS k(key, id) ON k.key = e.idempotency_key AND k.id = e.id`, "entry"))
	require.EqualValues(t, len(byKind["entry"]), queryInt(t, pool, "SELECT count(*) FROM ledger_entry WHERE idempotency_key LIKE 'mi-e-%'"), "no entry beyond the accepted ones")
	var sumA int64
	for _, r := range byKind["entry"] {
		sumA += r.amount
	}
	require.Equal(t, sumA+batchTotal, queryInt(t, pool, "SELECT balance_minor FROM ledger_account WHERE code = 'mi:a'"), "mi:a is the sum of every accepted entry")
	require.Equal(t, -(sumA + batchTotal), queryInt(t, pool, "SELECT balance_minor FROM ledger_account WHERE code = 'mi:b'"))

	// Orders: each once; paid ones PAID with one payment entry, the rest
	// expired; stock exact.
	require.EqualValues(t, len(byKind["order"]), matched(`
		SELECT count(*) FROM orders o JOIN unnest($1::text[], $2::bigint[]) AS k(ident, id) ON k.ident = o.identifier AND k.id = o.id`, "order"))
	require.EqualValues(t, len(byKind["order"]), queryInt(t, pool, "SELECT count(*) FROM orders"), "no order beyond the accepted ones")
	paid, refused := []int64{}, []int64{}
	for _, r := range byKind["pay"] {
		if r.status == http.StatusOK {
			paid = append(paid, r.amount)
		} else {
			refused = append(refused, r.amount)
		}
	}
	require.NotEmpty(t, paid, "some orders were paid")
	var n int64
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM orders WHERE id = ANY($1) AND status = 'PAID' AND ledger_entry_id IS NOT NULL", paid).Scan(&n))
	require.EqualValues(t, len(paid), n, "every paid order is PAID with its entry")
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM orders WHERE id = ANY($1) AND status = 'CANCELLED'", refused).Scan(&n))
	require.EqualValues(t, len(refused), n, "a refused payment means the order had expired")
	require.EqualValues(t, len(paid), queryInt(t, pool, "SELECT count(*) FROM orders WHERE status = 'PAID'"), "no order paid twice or by itself")
	require.EqualValues(t, len(paid), queryInt(t, pool, "SELECT count(DISTINCT ledger_entry_id) FROM orders WHERE status = 'PAID'"))
	require.Zero(t, queryInt(t, pool, "SELECT count(*) FROM orders WHERE status NOT IN ('PAID', 'CANCELLED') OR (status = 'CANCELLED' AND cancel_reason <> 'payment_timeout')"))
	require.Zero(t, queryInt(t, pool, `
		SELECT count(*) FROM orders o WHERE
		  (SELECT count(*) FROM order_event e WHERE e.order_id = o.id AND e.to_status = 'CREATED') <> 1 OR
		  (SELECT count(*) FROM order_event e WHERE e.order_id = o.id AND e.to_status = o.status) <> 1`), "orders whose history repeats a state")
	var onHand, reserved, sold int64
	require.NoError(t, pool.QueryRow(ctx, "SELECT stock_on_hand, stock_reserved, sold FROM product_stock WHERE sku = 'MI-1'").Scan(&onHand, &reserved, &sold))
	require.EqualValues(t, miStock, onHand+sold, "on_hand + sold changed only by PUT /products")
	require.Zero(t, reserved, "every reservation released or sold")
	require.Equal(t, queryInt(t, pool, "SELECT coalesce(sum(i.quantity), 0) FROM orders o JOIN order_item i ON i.order_id = o.id WHERE o.status = 'PAID'"), sold,
		"sold is exactly the paid orders' quantities")

	// Loans and repayments: each once; credit used is what is outstanding.
	require.EqualValues(t, len(byKind["loan"]), matched(`
		SELECT count(*) FROM loan l JOIN unnest($1::text[], $2::bigint[]) AS k(no, id) ON k.no = l.loan_no AND k.id = l.id`, "loan"))
	require.EqualValues(t, len(byKind["loan"]), queryInt(t, pool, "SELECT count(*) FROM loan WHERE loan_no LIKE 'mi-l-%'"))
	require.EqualValues(t, len(byKind["repayment"]), matched(`
		SELECT count(*) FROM repayment r JOIN unnest($1::text[], $2::bigint[]) AS k(ident, id) ON k.ident = r.identifier AND k.id = r.id`, "repayment"))
	require.EqualValues(t, len(byKind["repayment"]), queryInt(t, pool, "SELECT count(*) FROM repayment"))
	require.EqualValues(t, len(byKind["repayment"]), queryInt(t, pool, "SELECT count(*) FROM credit_restoration"), "every repayment restored its credit once")
	logRows(t, pool, "credit lines whose used differs from the outstanding principal", `
		SELECT c.borrower_id, c.used_minor, (SELECT coalesce(sum(l.principal_outstanding_minor), 0) FROM loan l WHERE l.borrower_id = c.borrower_id)
		  FROM credit_line c WHERE c.used_minor <> (SELECT coalesce(sum(l.principal_outstanding_minor), 0) FROM loan l WHERE l.borrower_id = c.borrower_id)`)
	require.Zero(t, queryInt(t, pool, `
		SELECT count(*) FROM credit_line c
		 WHERE c.used_minor <> (SELECT coalesce(sum(l.principal_outstanding_minor), 0) FROM loan l WHERE l.borrower_id = c.borrower_id)`),
		"credit used = principal outstanding, per borrower")
	require.Zero(t, queryInt(t, pool, `
		SELECT count(*) FROM loan l WHERE l.loan_no LIKE 'mi-l-%' AND l.principal_outstanding_minor <>
		  100000 - (SELECT coalesce(sum(r.principal_minor), 0) FROM repayment r WHERE r.loan_id = l.id)`), "loans whose principal is not what their repayments left")
}

// periodicKind is a periodic job of jobs.registerAll with its test
// interval. River skips inserting a unique kind while its previous run is
// still live (available, running, retryable, ...).
type periodicKind struct {
	kind       string
	every      time.Duration
	runOnStart bool
	unique     bool
	cron       bool // @every: River's cron rounds every run after the first to the second
	setupToo   bool // also configured on the setup instance
}

// riverMaintenanceStart bounds how long after its election a leader's
// periodic-job enqueuer starts: River starts its six maintenance services
// one after another, each after a random stagger of up to 1 s.
const riverMaintenanceStart = 6 * time.Second

// checkPeriodic checks River's periodic jobs against the leadership terms
// seen in river_leader. Every run was inserted within a leader's term
// (none in the leaderless gap after the kill, none by a second leader).
// In a term, River's enqueuer starts once (its RunOnStart runs share one
// scheduled_at, the anchor) and every kind's runs sit on its grid — the
// anchor (RunOnStart) or the anchor plus one interval, then one run per
// interval — with no slot taken twice (never doubled) and no slot up to
// the term's end left empty (never skipped), except while the previous run
// of a unique kind was live.
func (h *miHarness) checkPeriodic(t *testing.T, terms []miLeader, setupStoppedAt, killAtDB time.Time, killedID string, checkAt time.Time) {
	kinds := []periodicKind{
		{kind: ledger.SweepArgs{}.Kind(), every: miSweepEvery, runOnStart: true, setupToo: true},
		{kind: orders.KindSweep, every: miSweepEvery, runOnStart: true, unique: true, setupToo: true},
		{kind: collection.KindSweep, every: miSweepEvery, setupToo: true},
		{kind: events.PruneArgs{}.Kind(), every: miPruneEvery, runOnStart: true, setupToo: true},
		{kind: webhook.KindPrune, every: miPruneEvery, setupToo: true},
		{kind: webhook.KindDispatch, every: miDispatchEvery, runOnStart: true, unique: true, setupToo: true},
		{kind: cob.KindSchedule, every: miCOBEvery, runOnStart: true, cron: true},
	}
	const (
		exact = 5 * time.Millisecond // scheduled_at is computed by River, not measured
		slack = 3 * time.Second      // how late an enqueuer on a loaded machine may insert
	)
	type run struct {
		scheduled, created time.Time
		finalized          *time.Time
		// retried: River moved scheduled_at when it retried the run (the
		// rescuer's retry of a killed process's run), so its slot is known
		// only from created_at, the insert shortly after the slot.
		retried bool
	}
	type term struct {
		miLeader
		end   time.Time
		setup bool
		runs  map[string][]run
	}
	// Term ends: the next election, the setup's stop, the kill, or now.
	var ts []*term
	for i, l := range terms {
		tm := &term{miLeader: l, end: checkAt, runs: map[string][]run{}}
		if i+1 < len(terms) {
			tm.end = terms[i+1].electedAt
		}
		if h.procOf(l.id) < 0 {
			tm.setup = true
			tm.end = minTime(tm.end, setupStoppedAt)
		}
		if l.id == killedID {
			tm.end = minTime(tm.end, killAtDB)
		}
		ts = append(ts, tm)
	}
	require.GreaterOrEqual(t, len(ts), 3, "terms: setup, the killed leader, its successor")
	all := map[string][]run{}
	for _, pk := range kinds {
		rows, err := h.pool.Query(context.Background(), `
			SELECT scheduled_at, created_at, finalized_at, coalesce(array_length(errors, 1), 0) > 0 FROM river_job
			 WHERE kind = $1 AND metadata @> '{"periodic": true}' ORDER BY created_at`, pk.kind)
		require.NoError(t, err)
		runs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (run, error) {
			var x run
			return x, r.Scan(&x.scheduled, &x.created, &x.finalized, &x.retried)
		})
		require.NoError(t, err)
		all[pk.kind] = runs
		for _, r := range runs {
			var in *term
			for _, tm := range ts {
				if !r.created.Before(tm.electedAt) && r.created.Before(tm.end) {
					in = tm
				}
			}
			require.NotNil(t, in, "%s run scheduled %s was inserted at %s, outside every leader's term (a second leader, or a run in the leaderless gap)",
				pk.kind, r.scheduled.Format("15:04:05.000"), r.created.Format("15:04:05.000"))
			in.runs[pk.kind] = append(in.runs[pk.kind], r)
		}
	}
	// live says whether a run of kind inserted before instant m may still
	// have been live in the database at m: River's completer writes a
	// finished job's state in batches after its finalized_at (up to
	// completerLag on a loaded machine).
	const completerLag = time.Second
	live := func(kind string, m time.Time) bool {
		for _, r := range all[kind] {
			if !r.created.After(m.Add(exact)) && (r.finalized == nil || !r.finalized.Before(m.Add(-completerLag))) {
				return true
			}
		}
		return false
	}
	// runOnStartWithin is how long after its election a leader surely has
	// inserted its RunOnStart runs: River staggers the start of its
	// maintenance services (the periodic enqueuer among them) by up to
	// about a second, and this machine may be loaded.
	const runOnStartWithin = 3 * time.Second
	counts := map[string][]string{}
	for i, tm := range ts {
		configured := func(pk periodicKind) bool { return pk.setupToo || !tm.setup }
		// The anchor: the enqueuer's start, shared by the RunOnStart runs
		// of every non-unique kind.
		var anchor time.Time
		for _, pk := range kinds {
			if !configured(pk) || !pk.runOnStart || pk.unique {
				continue
			}
			rs := tm.runs[pk.kind]
			if len(rs) == 0 && tm.end.Sub(tm.electedAt) < runOnStartWithin {
				// A term shorter than River's staggered start of the
				// periodic enqueuer (the setup instance's, when it won
				// the election late) may end before its first insert.
				continue
			}
			require.NotEmpty(t, rs, "%s: no run in term %d (%s long)", pk.kind, i, tm.end.Sub(tm.electedAt).Round(time.Millisecond))
			if rs[0].retried {
				continue // its scheduled_at is the retry's
			}
			if anchor.IsZero() {
				anchor = rs[0].scheduled
			}
			require.WithinDuration(t, anchor, rs[0].scheduled, exact, "%s: term %d's RunOnStart run is not the enqueuer's start", pk.kind, i)
		}
		if anchor.IsZero() && tm.end.Sub(tm.electedAt) < runOnStartWithin {
			t.Logf("term %d: %s, %s long, ended before its periodic enqueuer's first insert", i, tm.id, tm.end.Sub(tm.electedAt).Round(time.Millisecond))
			continue
		}
		require.False(t, anchor.IsZero(), "term %d: no RunOnStart run to date the enqueuer's start by", i)
		started := anchor.Sub(tm.electedAt)
		require.LessOrEqual(t, started, riverMaintenanceStart+slack, "term %d's periodic jobs started %s after its election", i, started)
		t.Logf("term %d: %s elected %s, periodic jobs from %s later, until %s (%s)", i, tm.id, tm.electedAt.Format("15:04:05.000"),
			started.Round(time.Millisecond), tm.end.Format("15:04:05.000"), tm.end.Sub(tm.electedAt).Round(time.Millisecond))

		for _, pk := range kinds {
			rs := tm.runs[pk.kind]
			if !configured(pk) {
				require.Empty(t, rs, "%s is not configured on the setup instance", pk.kind)
				counts[pk.kind] = append(counts[pk.kind], "-")
				continue
			}
			counts[pk.kind] = append(counts[pk.kind], fmt.Sprint(len(rs)))
			// slot(k) is the kind's k-th run time in this term.
			slot := func(k int) time.Time {
				switch {
				case pk.runOnStart && k == 0:
					return anchor
				case pk.cron:
					return anchor.Truncate(time.Second).Add(time.Duration(k) * pk.every)
				case pk.runOnStart:
					return anchor.Add(time.Duration(k) * pk.every)
				default:
					return anchor.Add(time.Duration(k+1) * pk.every)
				}
			}
			k := 0            // next slot expected
			var seen []string // scheduled@inserted-finalized, for failure messages
			for _, r := range rs {
				fin := "live"
				if r.finalized != nil {
					fin = r.finalized.Format("05.000")
				}
				seen = append(seen, r.scheduled.Format("05.000")+"@"+r.created.Format("05.000")+"-"+fin)
			}
			for _, r := range rs {
				// The run's slot is its scheduled_at, or for a retried
				// run up to half an interval before its insert.
				at, early := r.scheduled, exact
				if r.retried {
					at, early = r.created, pk.every/2
				}
				for ; slot(k).Before(at.Add(-early)); k++ {
					require.True(t, pk.unique && live(pk.kind, slot(k)), "%s: the run due at %s in term %d is missing (skipped); runs (scheduled@inserted-finalized): %v", pk.kind, slot(k).Format("15:04:05.000"), i, seen)
				}
				require.False(t, slot(k).After(at.Add(exact)), "%s: a run at %s in term %d is off its interval grid or doubled (next slot %s); runs (scheduled@inserted-finalized): %v",
					pk.kind, at.Format("15:04:05.000"), i, slot(k).Format("15:04:05.000"), seen)
				k++
			}
			for ; slot(k).Before(tm.end.Add(-slack)); k++ {
				require.True(t, pk.unique && live(pk.kind, slot(k)), "%s: the run due at %s in term %d is missing (skipped); runs (scheduled@inserted-finalized): %v", pk.kind, slot(k).Format("15:04:05.000"), i, seen)
			}
		}
	}
	var summary []string
	for _, pk := range kinds {
		summary = append(summary, fmt.Sprintf("%-17s every %s: %s", pk.kind, pk.every, strings.Join(counts[pk.kind], " / ")))
	}
	t.Logf("periodic runs per term (setup / killed leader / successor):\n  %s", strings.Join(summary, "\n  "))
}

// waitUntil polls cond (in the test's goroutine, so it may use require)
// until it holds, failing the test after timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
