package main

// The database outage test of SPEC §10: riverbank serves mixed load on a
// private Postgres cluster, the cluster is shut down (fast) for a few
// seconds mid-load and started again on the same port and data, and the
// process — never restarted — must answer 503 database_unavailable quickly
// meanwhile, log the outage a handful of times rather than once per failed
// attempt, resume by itself, and lose or double nothing: the client retries
// every request whose outcome it did not learn with the same idempotency
// key, and once the queues drain the ledger, stock, credit and close-of-
// business invariants are checked in SQL.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"riverbank/internal/ledger"
	"riverbank/internal/orders"
	"riverbank/internal/pgcluster"
	"riverbank/internal/testdb"
)

const (
	outageWarmup  = 3 * time.Second // load before the database goes away
	outageDown    = 5 * time.Second // how long it stays away
	outageAfter   = 3 * time.Second // load after it is back
	outageLoaders = 6
	// outageRequestTimeout is RIVERBANK_REQUEST_TIMEOUT in this test; the
	// client gives every call that long plus a margin, and a call that
	// takes longer is a hang.
	outageRequestTimeout = 5 * time.Second
	outageClientMargin   = 3 * time.Second
	outageSKU            = "OUTAGE-1"
	outageStock          = 100_000
	outagePrice          = 250
	outageBorrowers      = 4
	outageSetupLoans     = 24
	outageChunkSize      = 3
	// A loan of 3,650,000 at 100 bps accrues exactly 100 a day, so every
	// loan's lifetime interest tells how many dates closed it.
	outagePrincipal    = 3_650_000
	outageRateBps      = 100
	outageDailyAccrual = 100
	// outageMaxDates bounds the dates the test closes: with loans starting
	// 25 days ago and the late-fee day at 28, no closed date can make a
	// loan overdue (that would need a month end and the 28th in between).
	outageMaxDates  = 20
	outageStartBack = 25
	// outageLogBudget is how many log lines the outage may cost, from the
	// shutdown to two seconds after the database is back: about one per
	// distinct message (measured 22-28), against 1,309 for a 5 s outage
	// before repeats were held back.
	outageLogBudget = 40
)

// outage phases, in order.
const (
	phaseUp       int32 = iota // before the shutdown
	phaseStopping              // pg_ctl stop running
	phaseDown                  // the server is down
	phaseStarting              // pg_ctl start running
	phaseBack                  // the server is back
)

// outageStats is what the load saw, by phase.
type outageStats struct {
	mu sync.Mutex
	// violations are answers the contract forbids: a 5xx other than 503
	// database_unavailable problem+json, a transport error or a client
	// timeout (a hang), any answer but 503 while the database is down, an
	// unexpected 4xx.
	violations    []string
	stopBegin     time.Time
	downAt        time.Time // StopServer returned
	startBegin    time.Time
	backAt        time.Time // StartServer returned
	first503      time.Time
	firstOKAfter  time.Time // first 2xx of a /v1 call sent after backAt
	readyOKAfter  time.Time // first readyz 200 after backAt
	downCalls     int       // calls sent and answered while down
	down503       int
	downMax       time.Duration // slowest call sent and answered while down
	downMaxPath   string
	allMax        time.Duration
	byStatus      map[int]int
	downByPath    map[string]int
	readyDown503  int
	readyDownCall int
}

func (s *outageStats) violation(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.violations) < 50 {
		s.violations = append(s.violations, fmt.Sprintf(format, args...))
	}
}

// outageRig is the running server, its database and the shared state of
// the load.
type outageRig struct {
	base   string
	client *http.Client
	phase  atomic.Int32
	stats  outageStats
}

// outageResp is one answer.
type outageResp struct {
	status  int
	body    []byte
	ctype   string
	latency time.Duration
	err     error
}

// call sends one request and classifies the answer against the contract.
func (r *outageRig) call(method, path string, body any) outageResp {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			panic(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, r.base+path, rd)
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	sentPhase := r.phase.Load()
	begin := time.Now()
	resp, err := r.client.Do(req)
	var out outageResp
	if err == nil {
		out.body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		out.status, out.ctype = resp.StatusCode, resp.Header.Get("Content-Type")
	}
	out.err = err
	out.latency = time.Since(begin)
	gotPhase := r.phase.Load()
	r.record(method, path, sentPhase, gotPhase, begin, out)
	return out
}

func (r *outageRig) record(method, path string, sentPhase, gotPhase int32, sent time.Time, out outageResp) {
	s := &r.stats
	route := method + " " + routeOf(path)
	if out.err != nil {
		s.violation("%s: transport error after %s (phase %d→%d): %v", route, out.latency.Round(time.Millisecond), sentPhase, gotPhase, out.err)
		return
	}
	code := ""
	if out.status >= 400 {
		var p problem
		if json.Unmarshal(out.body, &p) == nil {
			code = p.Code
		}
		if out.ctype != "application/problem+json" {
			s.violation("%s: %d with content type %q: %s", route, out.status, out.ctype, out.body)
		}
	}
	isReady := path == "/readyz"
	switch {
	case out.status == http.StatusServiceUnavailable && (code == "database_unavailable" || isReady && code == "unavailable"):
	case out.status >= 200 && out.status < 300:
		if sentPhase == phaseDown && gotPhase == phaseDown {
			s.violation("%s: %d while the database was down: %s", route, out.status, out.body)
		}
	default:
		s.violation("%s: unexpected %d (phase %d→%d): %s", route, out.status, sentPhase, gotPhase, out.body)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byStatus == nil {
		s.byStatus, s.downByPath = map[int]int{}, map[string]int{}
	}
	s.byStatus[out.status]++
	s.allMax = max(s.allMax, out.latency)
	if out.status == http.StatusServiceUnavailable && s.first503.IsZero() && sentPhase >= phaseStopping {
		s.first503 = time.Now()
	}
	if sentPhase == phaseDown && gotPhase == phaseDown {
		if isReady {
			s.readyDownCall++
			if out.status == http.StatusServiceUnavailable {
				s.readyDown503++
			}
			return
		}
		s.downCalls++
		s.downByPath[route]++
		if out.status == http.StatusServiceUnavailable {
			s.down503++
		}
		if out.latency > s.downMax {
			s.downMax, s.downMaxPath = out.latency, route
		}
	}
	if sentPhase == phaseBack && out.status >= 200 && out.status < 300 && !s.backAt.IsZero() && sent.After(s.backAt) {
		if isReady {
			if s.readyOKAfter.IsZero() {
				s.readyOKAfter = time.Now()
			}
		} else if s.firstOKAfter.IsZero() {
			s.firstOKAfter = time.Now()
		}
	}
}

// routeOf replaces numeric path segments, for grouping.
func routeOf(path string) string {
	path, _, _ = strings.Cut(path, "?")
	parts := strings.Split(path, "/")
	for i, p := range parts {
		if p != "" && strings.Trim(p, "0123456789") == "" {
			parts[i] = "{id}"
		}
	}
	return strings.Join(parts, "/")
}

// until sends a create until it is accepted (2xx), as a client that did
// not learn the outcome of a request does: the same request again, with
// the same idempotency key. It gives up (ok false) on an answer the
// contract forbids, after recording it, or when the deadline passes.
func (r *outageRig) until(deadline time.Time, method, path string, body any, into any) bool {
	for time.Now().Before(deadline) {
		out := r.call(method, path, body)
		switch {
		case out.err == nil && out.status >= 200 && out.status < 300:
			if into != nil {
				if err := json.Unmarshal(out.body, into); err != nil {
					r.stats.violation("%s %s: %d with a body that does not decode: %v", method, path, out.status, err)
					return false
				}
			}
			return true
		case out.err != nil, out.status == http.StatusServiceUnavailable:
			time.Sleep(100 * time.Millisecond)
		default:
			return false // recorded by call
		}
	}
	r.stats.violation("%s %s: not accepted before the deadline", method, path)
	return false
}

// outageLedger is what the client learnt was accepted.
type outageLedger struct {
	mu         sync.Mutex
	entries    map[string]int64 // idempotency key → amount debited to out:a
	entryIDs   map[string]int64
	orders     map[string]outageOrder // identifier → order
	loans      map[string]int64       // loan_no → id
	repayments map[string]int64       // loan id/identifier → repayment id
}

type outageOrder struct {
	id   int64
	qty  int64
	paid bool
}

func TestDatabaseOutage(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("outage test stops and starts a private Postgres under load; skipped in -short")
	}
	if _, err := pgcluster.FindBinaries(); err != nil {
		t.Skipf("outage test needs local Postgres server binaries to stop and start a private cluster: %v", err)
	}
	begin := time.Now()
	ctx := context.Background()

	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Database: "riverbank"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.Stop(context.Background()) })
	pool, err := pgxpool.New(ctx, cluster.URL)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	env := serveEnv(cluster.URL)
	env["RIVERBANK_LOG_LEVEL"] = "info"
	env["RIVERBANK_COB_SCHEDULE"] = "off"
	env["RIVERBANK_COB_CHUNK_SIZE"] = fmt.Sprint(outageChunkSize)
	env["RIVERBANK_LATE_FEE_DAY"] = "28"
	env["RIVERBANK_WORKERS"] = "8"
	env["RIVERBANK_REQUEST_TIMEOUT"] = outageRequestTimeout.String()
	// A job that was running when the database went away cannot record
	// its end; River's rescuer retries it after twice the job timeout.
	env["RIVERBANK_JOB_TIMEOUT"] = "3s"
	env["RIVERBANK_CREDIT_RESTORE_BACKOFF"] = "1s"
	b := startServer(t, env, "--migrate")
	t.Logf("private cluster and server ready in %s", time.Since(begin).Round(time.Millisecond))

	transport := &http.Transport{MaxIdleConnsPerHost: 4 * outageLoaders}
	t.Cleanup(transport.CloseIdleConnections)
	rig := &outageRig{base: b.baseURL,
		client: &http.Client{Timeout: outageRequestTimeout + outageClientMargin, Transport: transport}}
	setupDeadline := time.Now().Add(30 * time.Second)
	must := func(method, path string, body any) {
		t.Helper()
		require.True(t, rig.until(setupDeadline, method, path, body, nil), "%s %s: %v", method, path, rig.stats.violations)
	}

	// Setup: accounts, a product, credit lines, and loans that started
	// outageStartBack days ago for the close of business to work on.
	today := time.Now().UTC().Truncate(24 * time.Hour)
	firstDate := today.AddDate(0, 0, -outageStartBack)
	must(http.MethodPost, "/v1/accounts", map[string]any{"code": "out:a", "name": "Outage A", "type": "ASSET", "currency": "CNY"})
	must(http.MethodPost, "/v1/accounts", map[string]any{"code": "out:b", "name": "Outage B", "type": "LIABILITY", "currency": "CNY"})
	must(http.MethodPut, "/v1/products/"+outageSKU, map[string]any{"name": "Outage test product", "price_minor": outagePrice, "currency": "CNY", "stock": outageStock})
	for i := range outageBorrowers {
		must(http.MethodPut, fmt.Sprintf("/v1/credit-lines/out-b%d", i), map[string]any{"limit_minor": int64(1e12), "currency": "CNY"})
	}
	led := &outageLedger{entries: map[string]int64{}, entryIDs: map[string]int64{}, orders: map[string]outageOrder{}, loans: map[string]int64{}, repayments: map[string]int64{}}
	loanBody := func(no string, borrower int, start time.Time) map[string]any {
		return map[string]any{
			"loan_no": no, "borrower_id": fmt.Sprintf("out-b%d", borrower), "currency": "CNY", "principal_minor": outagePrincipal,
			"annual_rate_bps": outageRateBps, "penalty_rate_bps": 0, "late_fee_minor": 0,
			"start_date": start.Format("2006-01-02"), "due_date": today.AddDate(1, 0, 0).Format("2006-01-02"),
			"interest_mode": "DEALER", "dealer_id": fmt.Sprintf("out-b%d", borrower),
		}
	}
	var setupLoans []int64
	for i := range outageSetupLoans {
		no := fmt.Sprintf("out-setup-%d", i)
		var loan struct {
			ID int64 `json:"id"`
		}
		require.True(t, rig.until(setupDeadline, http.MethodPost, "/v1/loans", loanBody(no, i%outageBorrowers, firstDate), &loan), "%v", rig.stats.violations)
		led.loans[no] = loan.ID
		setupLoans = append(setupLoans, loan.ID)
	}
	require.Empty(t, rig.stats.violations, "setup")

	// Load: loaders cycle through urgent and ordinary journal entries,
	// orders (every other one paid), new loans and repayments; a COB
	// driver closes one date after another; a reader long-polls the
	// events feed; a prober polls /readyz. Every create is retried until
	// accepted, so the client ends up knowing the id of each.
	var (
		loadDone   atomic.Bool
		wg         sync.WaitGroup
		finishBy   = time.Now().Add(outageWarmup + outageDown + outageAfter + 45*time.Second)
		closed     []time.Time // dates whose run completed
		closedMu   sync.Mutex
		feedEvents atomic.Int64
	)
	for g := range outageLoaders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; !loadDone.Load(); n++ {
				switch (g + n) % 5 {
				case 0, 1:
					urgent := (g+n)%5 == 0
					key := fmt.Sprintf("out-e-%d-%d", g, n)
					k := int64(1 + (g*7919+n*31)%997)
					var e struct {
						ID int64 `json:"id"`
					}
					if rig.until(finishBy, http.MethodPost, "/v1/journal-entries", map[string]any{
						"idempotency_key": key, "description": "outage load", "urgent": urgent,
						"postings": []map[string]any{{"account": "out:a", "amount_minor": k}, {"account": "out:b", "amount_minor": -k}},
					}, &e) {
						led.mu.Lock()
						led.entries[key], led.entryIDs[key] = k, e.ID
						led.mu.Unlock()
					}
				case 2:
					ident := fmt.Sprintf("out-o-%d-%d", g, n)
					q := int64(1 + n%3)
					var o struct {
						ID int64 `json:"id"`
					}
					if !rig.until(finishBy, http.MethodPost, "/v1/orders", map[string]any{
						"buyer_id": fmt.Sprintf("out-buyer-%d", g), "merchant_id": "out-m", "identifier": ident,
						"items": []map[string]any{{"sku": outageSKU, "quantity": q}},
					}, &o) {
						continue
					}
					paid := n%2 == 0 && rig.until(finishBy, http.MethodPost, fmt.Sprintf("/v1/orders/%d/pay", o.ID),
						map[string]any{"payment_id": "pay-" + ident, "amount_minor": q * outagePrice}, nil)
					led.mu.Lock()
					led.orders[ident] = outageOrder{id: o.ID, qty: q, paid: paid}
					led.mu.Unlock()
				case 3:
					no := fmt.Sprintf("out-l-%d-%d", g, n)
					var loan struct {
						ID int64 `json:"id"`
					}
					if rig.until(finishBy, http.MethodPost, "/v1/loans", loanBody(no, (g+n)%outageBorrowers, today), &loan) {
						led.mu.Lock()
						led.loans[no] = loan.ID
						led.mu.Unlock()
					}
				case 4:
					loanID := setupLoans[(g*31+n)%len(setupLoans)]
					ident := fmt.Sprintf("out-r-%d-%d", g, n)
					var rep struct {
						ID int64 `json:"id"`
					}
					if rig.until(finishBy, http.MethodPost, fmt.Sprintf("/v1/loans/%d/repayments", loanID),
						map[string]any{"identifier": ident, "payer": "DEALER", "amount_minor": 700}, &rep) {
						led.mu.Lock()
						led.repayments[fmt.Sprintf("%d/%s", loanID, ident)] = rep.ID
						led.mu.Unlock()
					}
				}
			}
		}()
	}
	// The COB driver: start a date, wait for it to complete, go on.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for d := firstDate; !loadDone.Load() && d.Before(today) && d.Sub(firstDate) < outageMaxDates*24*time.Hour; d = d.AddDate(0, 0, 1) {
			date := d.Format("2006-01-02")
			if !rig.until(finishBy, http.MethodPut, "/v1/cob-runs/"+date, nil, nil) {
				return
			}
			for {
				var run struct {
					Status string `json:"status"`
				}
				if !rig.until(finishBy, http.MethodGet, "/v1/cob-runs/"+date, nil, &run) {
					return
				}
				if run.Status == "COMPLETED" {
					break
				}
				if run.Status != "RUNNING" {
					rig.stats.violation("COB run %s: status %s", date, run.Status)
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			closedMu.Lock()
			closed = append(closed, d)
			closedMu.Unlock()
		}
	}()
	// The feed reader: long-polls of up to 3 s from the start of the feed.
	wg.Add(1)
	go func() {
		defer wg.Done()
		cursor := ""
		for !loadDone.Load() {
			var page struct {
				Events []struct {
					ID int64 `json:"id"`
				} `json:"events"`
				NextCursor string `json:"next_cursor"`
			}
			out := rig.call(http.MethodGet, "/v1/events?limit=500&wait=3s&after="+cursor, nil)
			if out.err != nil || out.status != http.StatusOK {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if json.Unmarshal(out.body, &page) == nil {
				feedEvents.Add(int64(len(page.Events)))
				if page.NextCursor != "" {
					cursor = page.NextCursor
				}
			}
		}
	}()
	// The probe: /readyz and one of the reads every 100 ms, and /metrics
	// once while the database is down.
	reads := []string{"/v1/accounts/out:a", "/v1/system/info", "/v1/dead-letters", "/v1/ledger/trial-balance", "/v1/cob-runs",
		"/v1/orders?limit=5", "/v1/loans?limit=5", fmt.Sprintf("/v1/loans/%d/accruals", setupLoans[0]), "/v1/cases", "/v1/accounts",
		"/v1/webhook-subscriptions", "/v1/credit-lines/out-b0", "/v1/products/" + outageSKU}
	var metricsDown atomic.Value
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; !loadDone.Load(); n++ {
			rig.call(http.MethodGet, "/readyz", nil)
			rig.call(http.MethodGet, reads[n%len(reads)], nil)
			if rig.phase.Load() == phaseDown && metricsDown.Load() == nil {
				if m, err := scrapeMetrics(rig); err == nil && rig.phase.Load() == phaseDown {
					metricsDown.Store(m)
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	// The outage, begun while a close-of-business run is half done (the
	// driver starts one after another, so one soon is).
	time.Sleep(outageWarmup)
	var runAtStop string
	require.Eventually(t, func() bool {
		return pool.QueryRow(ctx, "SELECT business_date::text FROM cob_run WHERE status = 'RUNNING' AND chunks_done < chunks_total").Scan(&runAtStop) == nil
	}, 20*time.Second, 5*time.Millisecond, "a close-of-business run to interrupt")
	logStart := time.Now()
	rig.stats.mu.Lock()
	rig.stats.stopBegin = time.Now()
	rig.stats.mu.Unlock()
	rig.phase.Store(phaseStopping)
	require.NoError(t, cluster.StopServer(ctx))
	rig.stats.mu.Lock()
	rig.stats.downAt = time.Now()
	rig.stats.mu.Unlock()
	rig.phase.Store(phaseDown)
	time.Sleep(outageDown)
	rig.phase.Store(phaseStarting)
	rig.stats.mu.Lock()
	rig.stats.startBegin = time.Now()
	rig.stats.mu.Unlock()
	require.NoError(t, cluster.StartServer(ctx))
	rig.stats.mu.Lock()
	rig.stats.backAt = time.Now()
	rig.stats.mu.Unlock()
	rig.phase.Store(phaseBack)
	time.Sleep(outageAfter)
	loadDone.Store(true)
	wg.Wait()
	logEnd := time.Now()

	st := &rig.stats
	t.Logf("outage: stop took %s, down %s, start took %s; first 503 %s after the stop began; while down %d calls (%d × 503, by route %v), slowest %s (%s); /readyz %d/%d × 503 while down; slowest call overall %s; statuses %v",
		st.downAt.Sub(st.stopBegin).Round(time.Millisecond), st.startBegin.Sub(st.downAt).Round(time.Millisecond), st.backAt.Sub(st.startBegin).Round(time.Millisecond),
		sinceOrNever(st.first503, st.stopBegin), st.downCalls, st.down503, st.downByPath, st.downMax.Round(time.Millisecond), st.downMaxPath,
		st.readyDown503, st.readyDownCall, st.allMax.Round(time.Millisecond), st.byStatus)
	t.Logf("resume: first accepted /v1 call %s and /readyz 200 %s after the server was back; COB run of %s was half done at the stop; %d feed events read",
		sinceOrNever(st.firstOKAfter, st.backAt), sinceOrNever(st.readyOKAfter, st.backAt), runAtStop, feedEvents.Load())
	require.Empty(t, st.violations, "answers the outage contract forbids")
	require.NotZero(t, st.downCalls, "the load kept calling while the database was down")
	require.Equal(t, st.downCalls, st.down503, "every call while the database was down was answered 503 database_unavailable")
	require.NotZero(t, st.readyDownCall, "/readyz was probed while the database was down")
	require.Equal(t, st.readyDownCall, st.readyDown503, "/readyz is 503 while the database is down")
	require.False(t, st.firstOKAfter.IsZero(), "calls succeed again once the database is back, without a restart")
	require.False(t, st.readyOKAfter.IsZero(), "/readyz is 200 again once the database is back")
	down, _ := metricsDown.Load().(string)
	require.Contains(t, down, "\nriverbank_database_up 0\n", "/metrics shows the outage while it lasts")
	after, err := scrapeMetrics(rig)
	require.NoError(t, err)
	require.Contains(t, after, "\nriverbank_database_up 1\n")
	// One outage, or two when the probe reached the server once more
	// while it was shutting down (a fast shutdown still accepts
	// connections for a moment under load).
	require.Regexp(t, `\nriverbank_database_outages_total [12]\n`, after)

	// Logs: the outage is told, not shouted. Counted from the shutdown to
	// two seconds after the database is back (River's retries settle).
	lines := logLinesBetween(t, b.proc.stderr.String(), logStart, st.backAt.Add(2*time.Second))
	t.Logf("%d log lines from the shutdown to 2s after the database was back (%s), %d to the end of the load:\n%s", len(lines),
		st.backAt.Add(2*time.Second).Sub(logStart).Round(time.Millisecond), len(logLinesBetween(t, b.proc.stderr.String(), logStart, logEnd)), summariseLogLines(lines))
	assert.LessOrEqual(t, len(lines), outageLogBudget, "log lines during the outage")
	for _, l := range logLinesBetween(t, b.proc.stderr.String(), logStart, logEnd) {
		if l["component"] == "dbhealth" {
			t.Logf("dbhealth: %v", l)
		}
	}

	// Drain: the minute's ledger sweep (the non-urgent entries, loan and
	// COB postings) is asked for now rather than waited for; then every
	// River job the load caused must finish.
	drainStart := time.Now()
	rc := insertClient(t, pool)
	_, err = rc.Insert(ctx, ledger.SweepArgs{}, nil)
	require.NoError(t, err)
	closedMu.Lock()
	lastClosed := closed[len(closed)-1]
	closedMu.Unlock()
	drained := false
	for time.Since(drainStart) < 60*time.Second {
		pending := queryInt(t, pool, "SELECT count(*) FROM ledger_posting_state WHERE applied_at IS NULL")
		created := queryInt(t, pool, "SELECT count(*) FROM orders WHERE status = 'CREATED'")
		unrestored := queryInt(t, pool, `SELECT count(*) FROM repayment r WHERE r.principal_minor > 0
			AND NOT EXISTS (SELECT 1 FROM credit_restoration c WHERE c.repayment_id = r.id)`)
		running := queryInt(t, pool, "SELECT count(*) FROM cob_run WHERE status <> 'COMPLETED' OR trial_balance IS NULL")
		if pending == 0 && created == 0 && unrestored == 0 && running == 0 {
			drained = true
			break
		}
		if time.Since(drainStart) > 10*time.Second && int(time.Since(drainStart).Seconds())%10 == 0 {
			t.Logf("draining: %d postings pending, %d orders CREATED, %d repayments unrestored, %d runs open or unchecked", pending, created, unrestored, running)
			_, _ = rc.Insert(ctx, ledger.SweepArgs{}, nil)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if !drained {
		logJobs(t, pool, "jobs when the drain timed out")
		t.Fatalf("the queues did not drain within 60s of the load's end; server log:\n%s", tail(b.proc.stderr.String(), 60))
	}
	t.Logf("drained %s after the load ended (%s after the database was back)", time.Since(drainStart).Round(time.Millisecond), time.Since(st.backAt).Round(time.Millisecond))
	logJobs(t, pool, "jobs after the drain")

	// Invariants, in SQL.
	led.mu.Lock()
	defer led.mu.Unlock()
	t.Logf("accepted: %d entries, %d orders, %d loans, %d repayments; %d dates closed (%s … %s)",
		len(led.entries), len(led.orders), len(led.loans), len(led.repayments), len(closed), firstDate.Format("2006-01-02"), lastClosed.Format("2006-01-02"))
	require.NotZero(t, len(led.entries))
	require.NotZero(t, len(led.orders))
	require.NotZero(t, len(led.repayments))
	require.Greater(t, len(led.loans), outageSetupLoans)

	t.Run("every accepted request exists exactly once", func(t *testing.T) {
		var keys []string
		var ids []int64
		var totalA int64
		for k, id := range led.entryIDs {
			keys, ids = append(keys, k), append(ids, id)
			totalA += led.entries[k]
		}
		assert.Equal(t, int64(len(keys)), queryInt(t, pool, `SELECT count(*) FROM ledger_entry e
			JOIN unnest($1::text[], $2::bigint[]) AS k(key, id) ON k.key = e.idempotency_key AND k.id = e.id`, keys, ids), "entries by (key, id)")
		assert.Equal(t, int64(len(keys)), queryInt(t, pool, "SELECT count(*) FROM ledger_entry WHERE idempotency_key LIKE 'out-e-%'"), "no entry the client does not know of")
		assert.Equal(t, totalA, queryInt(t, pool, "SELECT balance_minor FROM ledger_account WHERE code = 'out:a'"), "out:a is the sum of the accepted entries")

		var idents []string
		var orderIDs []int64
		for k, o := range led.orders {
			idents, orderIDs = append(idents, k), append(orderIDs, o.id)
		}
		assert.Equal(t, int64(len(idents)), queryInt(t, pool, `SELECT count(*) FROM orders o
			JOIN unnest($1::text[], $2::bigint[]) AS k(ident, id) ON k.ident = o.identifier AND k.id = o.id`, idents, orderIDs), "orders by (identifier, id)")
		assert.Equal(t, int64(len(idents)), queryInt(t, pool, "SELECT count(*) FROM orders"), "no order the client does not know of")
		assert.Equal(t, int64(len(idents)), queryInt(t, pool, "SELECT count(*) FROM event WHERE type = 'order.created'"), "one order.created event per order")

		var nos []string
		var loanIDs []int64
		for k, id := range led.loans {
			nos, loanIDs = append(nos, k), append(loanIDs, id)
		}
		assert.Equal(t, int64(len(nos)), queryInt(t, pool, `SELECT count(*) FROM loan l
			JOIN unnest($1::text[], $2::bigint[]) AS k(no, id) ON k.no = l.loan_no AND k.id = l.id`, nos, loanIDs), "loans by (loan_no, id)")
		assert.Equal(t, int64(len(nos)), queryInt(t, pool, "SELECT count(*) FROM loan"), "no loan the client does not know of")
		assert.Equal(t, int64(len(nos)), queryInt(t, pool, "SELECT count(DISTINCT disbursement_entry_id) FROM loan"), "one disbursement per loan")

		var repIDs []int64
		for _, id := range led.repayments {
			repIDs = append(repIDs, id)
		}
		assert.Equal(t, int64(len(repIDs)), queryInt(t, pool, "SELECT count(*) FROM repayment WHERE id = ANY($1)", repIDs), "repayments by id")
		assert.Equal(t, int64(len(repIDs)), queryInt(t, pool, "SELECT count(*) FROM repayment"), "no repayment the client does not know of")
	})

	t.Run("ledger balances are the sum of their postings and the trial balance is zero", func(t *testing.T) {
		assert.Zero(t, queryInt(t, pool, "SELECT count(*) FROM ledger_posting_state WHERE applied_at IS NULL"))
		assert.Zero(t, queryInt(t, pool, "SELECT count(*) FROM ledger_entry_state WHERE status <> 'APPLIED' OR pending_postings <> 0"))
		assert.Zero(t, queryInt(t, pool, `SELECT count(*) FROM (
			SELECT a.id FROM ledger_account a LEFT JOIN ledger_posting_state p ON p.account_id = a.id AND p.applied_at IS NOT NULL
			 GROUP BY a.id HAVING a.balance_minor <> coalesce(sum(p.amount_minor), 0) OR a.applied_postings <> count(p.id)) m`),
			"accounts whose balance is not the sum of their applied postings")
		assert.Zero(t, queryInt(t, pool, "SELECT count(*) FROM (SELECT currency FROM ledger_account GROUP BY currency HAVING sum(balance_minor) <> 0) c"), "currencies whose balances do not sum to zero")
		// Sub-ledger: receivables equal what the loans owe.
		assert.Equal(t, queryInt(t, pool, "SELECT coalesce(sum(principal_outstanding_minor), 0)::bigint FROM loan"),
			queryInt(t, pool, "SELECT balance_minor FROM ledger_account WHERE code = 'loans:principal' AND currency = 'CNY'"), "loans:principal")
		assert.Equal(t, queryInt(t, pool, "SELECT coalesce(sum(interest_outstanding_dealer_minor), 0)::bigint FROM loan"),
			queryInt(t, pool, "SELECT balance_minor FROM ledger_account WHERE code = 'loans:interest:dealer' AND currency = 'CNY'"), "loans:interest:dealer")
	})

	t.Run("stock is exact", func(t *testing.T) {
		var onHand, reserved, sold int64
		require.NoError(t, pool.QueryRow(ctx, "SELECT stock_on_hand, stock_reserved, sold FROM product_stock WHERE sku = $1", outageSKU).Scan(&onHand, &reserved, &sold))
		var ordered, paidOrders int64
		var paymentKeys []string
		for ident, o := range led.orders {
			ordered += o.qty
			if o.paid {
				paidOrders++
				paymentKeys = append(paymentKeys, orders.PaymentEntryKey("pay-"+ident))
			}
		}
		assert.Equal(t, int64(outageStock), onHand+sold, "on_hand + sold is changed only by PUT /products")
		assert.Zero(t, reserved, "every reservation moved to sold by order.confirm")
		assert.Equal(t, ordered, sold, "sold is what the accepted orders hold")
		assert.Equal(t, paidOrders, queryInt(t, pool, "SELECT count(*) FROM orders WHERE status = 'PAID'"), "paid orders")
		assert.Equal(t, int64(len(led.orders))-paidOrders, queryInt(t, pool, "SELECT count(*) FROM orders WHERE status = 'CONFIRMED'"), "unpaid orders are confirmed")
		assert.Zero(t, queryInt(t, pool, `SELECT count(*) FROM orders o WHERE
			(SELECT count(*) FROM order_event e WHERE e.order_id = o.id AND e.to_status = 'CREATED') <> 1 OR
			(SELECT count(*) FROM order_event e WHERE e.order_id = o.id AND e.to_status = 'CONFIRMED') <> 1 OR
			(SELECT count(*) FROM order_event e WHERE e.order_id = o.id AND e.to_status = 'PAID') > 1`), "orders with a transition recorded twice or missing")
		assert.Equal(t, paidOrders, queryInt(t, pool, "SELECT count(*) FROM ledger_entry WHERE idempotency_key = ANY($1)", paymentKeys), "one payment entry per paid order")
	})

	t.Run("credit used is the principal outstanding", func(t *testing.T) {
		assert.Zero(t, queryInt(t, pool, `SELECT count(*) FROM credit_line c WHERE c.used_minor <>
			(SELECT coalesce(sum(l.principal_outstanding_minor), 0) FROM loan l WHERE l.borrower_id = c.borrower_id)`), "credit lines whose used differs from their loans' principal outstanding")
		assert.Zero(t, queryInt(t, pool, "SELECT count(*) FROM (SELECT repayment_id FROM credit_restoration GROUP BY 1 HAVING count(*) > 1) d"))
	})

	t.Run("every loan closed exactly once per date", func(t *testing.T) {
		dates := int64(len(closed))
		assert.Zero(t, queryInt(t, pool, "SELECT count(*) FROM cob_run WHERE status <> 'COMPLETED' OR loans_done <> loans_total OR loans_failed <> 0 OR chunks_done <> chunks_total"), "runs not completed cleanly")
		assert.Equal(t, dates, queryInt(t, pool, "SELECT count(*) FROM cob_run"))
		assert.Zero(t, queryInt(t, pool, "SELECT count(*) FROM cob_run r WHERE (SELECT count(*) FROM cob_chunk c WHERE c.business_date = r.business_date) <> r.chunks_total"), "chunk rows per run")
		assert.Zero(t, queryInt(t, pool, "SELECT count(*) FROM cob_run WHERE loans_total <> $1", int64(outageSetupLoans)), "runs that did not count every setup loan")
		// 100 a day per loan: the lifetime interest counts the dates.
		assert.Zero(t, queryInt(t, pool, `SELECT count(*) FROM loan WHERE start_date = $1
			AND (last_closed_date <> $2 OR interest_dealer_accrued_minor <> $3)`, firstDate, lastClosed, dates*outageDailyAccrual),
			"setup loans not closed exactly once for each of the %d dates", dates)
		assert.Zero(t, queryInt(t, pool, "SELECT count(*) FROM loan WHERE start_date = $1 AND last_closed_date IS NOT NULL", today), "loans of today are not closed")
		assert.Zero(t, queryInt(t, pool, `SELECT count(*) FROM cob_run_total WHERE interest_dealer_minor <> $1
			OR interest_manufacturer_minor <> 0 OR penalty_minor <> 0 OR late_fee_minor <> 0`, int64(outageSetupLoans*outageDailyAccrual)), "run totals")
		assert.Zero(t, queryInt(t, pool, "SELECT count(*) FROM cob_run WHERE NOT (trial_balance->>'balanced')::boolean"), "runs whose trial balance did not balance")
	})

	t.Run("no job discarded", func(t *testing.T) {
		logRows(t, pool, "discarded jobs", "SELECT id, kind, args, errors FROM river_job WHERE state = 'discarded' ORDER BY id LIMIT 20")
		assert.Zero(t, queryInt(t, pool, "SELECT count(*) FROM river_job WHERE state = 'discarded'"))
	})

	_, err = b.proc.stop(t)
	require.NoError(t, err)
	t.Logf("total %s", time.Since(begin).Round(time.Millisecond))
}

// scrapeMetrics reads /metrics (outside the contract checks of call: it
// answers 200 during an outage, with the database gauges missing).
func scrapeMetrics(r *outageRig) (string, error) {
	req, err := http.NewRequest(http.MethodGet, r.base+"/metrics", nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := r.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("/metrics: %d %s", resp.StatusCode, b)
	}
	return string(b), nil
}

func sinceOrNever(t, from time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Sub(from).Round(time.Millisecond).String()
}

// logLinesBetween returns the JSON log lines stamped in [from, to].
func logLinesBetween(t *testing.T, output string, from, to time.Time) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.SplitSeq(output, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("log line is not JSON: %q", line)
			continue
		}
		ts, _ := rec["time"].(string)
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil || at.Before(from) || at.After(to) {
			continue
		}
		out = append(out, rec)
	}
	return out
}

// summariseLogLines counts log lines by level and message.
func summariseLogLines(lines []map[string]any) string {
	counts := map[string]int{}
	for _, l := range lines {
		counts[fmt.Sprintf("%v %v", l["level"], l["msg"])]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return counts[keys[i]] > counts[keys[j]] })
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %5d  %s\n", counts[k], k)
	}
	return b.String()
}

func tail(s string, lines int) string {
	all := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// serve started while its database is down waits for it (saying so once)
// and comes up by itself when it appears, as a service started together
// with its database by a supervisor should. Giving up after the wait is
// TestServeStartup/UnreachableDatabase.
func TestServeWaitsForDatabase(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a private Postgres; skipped in -short")
	}
	if _, err := pgcluster.FindBinaries(); err != nil {
		t.Skipf("needs local Postgres server binaries to stop and start a private cluster: %v", err)
	}
	ctx := context.Background()
	cluster, err := pgcluster.Start(ctx, pgcluster.Options{Database: "riverbank"})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cluster.Stop(context.Background()) })
	_, _, err = runToEnd(t, []string{"migrate", "--database-url", cluster.URL}, nil)
	require.NoError(t, err)
	require.NoError(t, cluster.StopServer(ctx))

	env := serveEnv(cluster.URL)
	env["RIVERBANK_DATABASE_WAIT"] = "2m"
	proc := start(t, []string{"serve"}, env)
	require.Eventually(t, func() bool {
		return strings.Contains(proc.stderr.String(), "cannot reach the database; waiting for it")
	},
		30*time.Second, 20*time.Millisecond, "serve says it waits; stderr:\n%s", proc.stderr)
	time.Sleep(time.Second) // a few more attempts
	select {
	case <-proc.exited:
		t.Fatalf("serve gave up instead of waiting: %v\n%s", proc.err, proc.stderr)
	default:
	}
	require.NotContains(t, proc.stderr.String(), "riverbank serving")

	require.NoError(t, cluster.StartServer(ctx))
	addr := proc.waitServing(t)
	b := &testBundle{proc: proc, baseURL: "http://" + addr, client: &http.Client{Timeout: 30 * time.Second}}
	resp, body := b.get(t, "/readyz")
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	stderr := proc.stderr.String()
	require.Equal(t, 1, strings.Count(stderr, "cannot reach the database; waiting for it"), "the wait is logged once:\n%s", stderr)
	require.Contains(t, stderr, "database reachable; starting")
	_, err = proc.stop(t)
	require.NoError(t, err)
}

// A request whose database work outlasts RIVERBANK_REQUEST_TIMEOUT (here a
// row lock held elsewhere; a database that stopped answering without
// closing its connections looks the same) ends at the deadline with 503
// database_unavailable and writes nothing; a long-poll of the events feed
// gets its wait on top of the timeout.
func TestRequestTimeout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL, pool := testdb.NewDB(t)
	env := serveEnv(dbURL)
	env["RIVERBANK_REQUEST_TIMEOUT"] = "1s"
	b := startServer(t, env)
	resp, body := b.do(t, http.MethodPut, "/v1/products/TIMEOUT-1", strings.NewReader(`{"name":"t","price_minor":100,"currency":"CNY","stock":10}`),
		withBearer(testToken), func(r *http.Request) { r.Header.Set("Content-Type", "application/json") })
	require.Equal(t, http.StatusCreated, resp.StatusCode, "%s", body)

	lock, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer lock.Rollback(ctx) //nolint:errcheck
	_, err = lock.Exec(ctx, "SELECT 1 FROM product WHERE sku = 'TIMEOUT-1' FOR UPDATE")
	require.NoError(t, err)

	order := `{"buyer_id":"tb","merchant_id":"tm","identifier":"t-1","items":[{"sku":"TIMEOUT-1","quantity":1}]}`
	resp, body = b.do(t, http.MethodPost, "/v1/orders", strings.NewReader(order),
		withBearer(testToken), func(r *http.Request) { r.Header.Set("Content-Type", "application/json") })
	requireProblem(t, resp, body, http.StatusServiceUnavailable, "database_unavailable")
	require.NotContains(t, string(body), "context deadline", "no internal text")
	require.Zero(t, queryInt(t, pool, "SELECT count(*) FROM orders"), "nothing written")

	require.NoError(t, lock.Rollback(ctx))
	resp, body = b.do(t, http.MethodPost, "/v1/orders", strings.NewReader(order),
		withBearer(testToken), func(r *http.Request) { r.Header.Set("Content-Type", "application/json") })
	require.Equal(t, http.StatusCreated, resp.StatusCode, "the same request again, once the database answers: %s", body)

	// The long-poll waits its 2s although the timeout is 1s (once the
	// order's confirmation, the last event to come, is in the feed).
	require.Eventually(t, func() bool {
		return queryInt(t, pool, "SELECT count(*) FROM event WHERE type = 'order.confirmed'") == 1
	}, 30*time.Second, 20*time.Millisecond)
	var page struct {
		Events []json.RawMessage `json:"events"`
		Next   string            `json:"next_cursor"`
	}
	resp, body = b.get(t, "/v1/events?limit=500", withBearer(testToken))
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
	require.NoError(t, json.Unmarshal(body, &page))
	resp, body = b.get(t, "/v1/events?wait=2s&after="+page.Next, withBearer(testToken))
	require.Equal(t, http.StatusOK, resp.StatusCode, "a long-poll longer than the request timeout: %s", body)
}
