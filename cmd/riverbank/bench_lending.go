package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"riverbank/internal/bench"
	"riverbank/internal/config"
	"riverbank/internal/lending"
	"riverbank/internal/server"
)

func init() {
	benchScenarios["lending"] = benchScenario{
		summary: "N HTTP clients grant and fully repay loans over K credit lines (max load, then half load); credit.restore lag, used == outstanding check; vs pgbench tpcb-like",
		run:     runBenchLending,
	}
}

type lendingBenchOpts struct {
	clients      int
	duration     time.Duration
	borrowers    int
	hot          bool
	principal    int64
	currencies   []string
	halfLoad     bool
	rate         float64
	pgbench      bool
	workers      int
	scratchDB    bool
	drainTimeout time.Duration
}

func runBenchLending(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench lending", `Lending benchmark through the real HTTP API, server in this process (so peak
RSS covers server and load generator together).
--borrowers credit lines are created (currencies rotated over --currencies);
client i uses lines i, i+N, i+2N, ... so clients do not share a line when
--borrowers is a multiple of --clients (--hot: one line for everybody). Each
client loops for --duration: POST /v1/loans (--principal, start 30 days
ago, due in 90 days, interest mode rotating DEALER / MANUFACTURER / SPLIT),
then POST /v1/loans/{id}/repayments repaying the principal in full (payer
DEALER, value_date = start_date; no close of business runs, so nothing
else is owed). With --half-load a second phase is paced at half the
loan+repayment rate reached. After each phase the bench waits until every
repayment's credit.restore has run. Prints loans/s and repayments/s
(201s), latency p50/p99 per operation, errors by status and code, restore
lag (credit_restoration.restored_at − repayment.created_at, from SQL) per
phase, and checks that every line's used_minor (GET /v1/credit-lines)
equals the principal its loans still owe. Then pgbench tpcb-like with the
same client count and duration on the same server, and the ratios.
DATABASE_URL (or --database-url) is migrated and used; without it a
throwaway private Postgres is started; with --scratch-db a fresh database
is created next to DATABASE_URL's and dropped afterwards.`, stderr)
	loader := config.Register(fs, getenv, config.DatabaseOnly)
	var o lendingBenchOpts
	var currencies string
	fs.IntVar(&o.clients, "clients", 16, "concurrent HTTP clients (and pgbench clients)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each load phase (and of pgbench)")
	fs.IntVar(&o.borrowers, "borrowers", 64, "credit lines (borrowers) the clients spread over")
	fs.BoolVar(&o.hot, "hot", false, "one credit line for every client (overrides --borrowers; first currency only)")
	fs.Int64Var(&o.principal, "principal", 100000, "principal of every loan, minor units")
	fs.StringVar(&currencies, "currencies", "CNY,USD", "comma-separated currencies rotated over the credit lines")
	fs.BoolVar(&o.halfLoad, "half-load", true, "also run a phase paced at half the rate the max phase reached")
	fs.Float64Var(&o.rate, "rate", 0, "pace the (only) load phase at this many loans+repayments per second in total instead of running flat out (--half-load is then ignored)")
	fs.BoolVar(&o.pgbench, "pgbench", true, "also run pgbench tpcb-like for the ratio")
	fs.IntVar(&o.workers, "workers", 0, "RIVERBANK_WORKERS of the server (0: the default)")
	fs.BoolVar(&o.scratchDB, "scratch-db", false, "create a fresh database next to DATABASE_URL's, and drop it afterwards")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 2*time.Minute, "how long to wait for the credit restorations of a phase")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loader.Load(fs)
	if err != nil {
		return err
	}
	for _, c := range strings.Split(currencies, ",") {
		if c = strings.TrimSpace(c); c != "" {
			o.currencies = append(o.currencies, c)
		}
	}
	if o.hot {
		o.borrowers = 1
	}
	if o.clients < 1 || o.duration <= 0 || o.borrowers < 1 || o.principal < 1 || o.rate < 0 || o.drainTimeout <= 0 || len(o.currencies) == 0 {
		return errors.New("--clients, --duration, --borrowers, --principal, --drain-timeout must be positive, --rate not negative, --currencies not empty")
	}
	if o.scratchDB && cfg.DatabaseURL == "" {
		return errors.New("--scratch-db needs DATABASE_URL (or --database-url) of the server to create it on")
	}
	logger := newLogger(stderr, slog.LevelWarn)
	dsn, cleanup, err := benchDatabase(ctx, cfg.DatabaseURL, logger, stdout)
	if err != nil {
		return err
	}
	defer cleanup()
	if o.scratchDB {
		scratch, drop, err := createScratchDatabase(ctx, dsn, "riverbank_bench_lending_")
		if err != nil {
			return err
		}
		defer drop()
		fmt.Fprintf(stdout, "scratch database: %s\n", scratchName(scratch))
		dsn = scratch
	}

	fmt.Fprintf(stdout, "machine: %s\n", bench.Machine())
	if *cpuprofile != "" {
		stop, err := bench.StartCPUProfile(*cpuprofile)
		if err != nil {
			return err
		}
		defer stop()
	}
	res, err := benchLendingLoad(ctx, dsn, o, stdout, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "peak RSS (server + load generator, one process): %s\n", bench.MiB(bench.PeakRSS()))
	if o.pgbench {
		// On DATABASE_URL's server (the scratch database is only for riverbank).
		adminDSN := cfg.DatabaseURL
		if adminDSN == "" {
			adminDSN = dsn
		}
		tps, err := bench.Pgbench(ctx, adminDSN, o.clients, o.duration, "tpcb-like")
		if err != nil {
			return fmt.Errorf("pgbench: %w", err)
		}
		fmt.Fprintf(stdout, "pgbench tpcb-like, %d clients, %s: %.0f tps\n", o.clients, o.duration, tps)
		fmt.Fprintf(stdout, "ratio: repayments/s = %.2f × pgbench tpcb-like tps (target ≥ 0.40); loans/s = %.2f ×; loans + repayments = %.2f ×\n",
			res.repaymentsPerSec/tps, res.loansPerSec/tps, (res.loansPerSec+res.repaymentsPerSec)/tps)
	}
	if !res.invariantOK {
		return errors.New("invariant check FAILED: some credit line's used_minor differs from its loans' principal outstanding")
	}
	return nil
}

// createScratchDatabase creates an empty database next to dsn's and returns
// its URL and a func dropping it.
func createScratchDatabase(ctx context.Context, dsn, prefix string) (string, func(), error) {
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", nil, fmt.Errorf("connect: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	name := prefix + hex.EncodeToString(suffix)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("create scratch database: %w", err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return "", nil, fmt.Errorf("parse database URL: %w", err)
	}
	u.Path = "/" + name
	drop := func() {
		c, err := pgx.Connect(context.WithoutCancel(ctx), dsn)
		if err != nil {
			return
		}
		defer c.Close(context.WithoutCancel(ctx))
		_, _ = c.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
	}
	return u.String(), drop, nil
}

func scratchName(dsn string) string {
	if u, err := url.Parse(dsn); err == nil {
		return strings.TrimPrefix(u.Path, "/")
	}
	return "?"
}

// lendingPhase is one load phase: what the clients did, and the ids of the
// repayments accepted (whose restorations are measured afterwards).
type lendingPhase struct {
	name       string
	rate       float64 // cycles/s asked for (0: flat out)
	elapsed    time.Duration
	loans      atomic.Int64
	repayments atomic.Int64
	loanLat    bench.Latencies
	repayLat   bench.Latencies
	errMu      sync.Mutex
	errs       map[string]int64
	repIDs     []int64
	drain      time.Duration // load stop → last restoration
	restoreLag bench.Latencies
	waits      map[string]int // sampled Postgres wait events of this database's backends
	samples    int
}

func (p *lendingPhase) fail(op string, status int, err error, prob *bench.Problem) {
	key := fmt.Sprintf("%s %d", op, status)
	switch {
	case err != nil:
		key = op + " transport error"
	case prob != nil && prob.Code != "":
		key += " " + prob.Code
	}
	p.errMu.Lock()
	p.errs[key]++
	p.errMu.Unlock()
}

type lendingResult struct {
	loansPerSec, repaymentsPerSec float64
	invariantOK                   bool
}

type benchLoan struct {
	ID                        int64  `json:"id"`
	StartDate                 string `json:"start_date"`
	PrincipalOutstandingMinor int64  `json:"principal_outstanding_minor"`
}

type benchRepayment struct {
	ID         int64 `json:"id"`
	Allocation struct {
		PrincipalMinor int64 `json:"principal_minor"`
	} `json:"allocation"`
}

type benchCreditLine struct {
	Currency   string `json:"currency"`
	LimitMinor int64  `json:"limit_minor"`
	UsedMinor  int64  `json:"used_minor"`
}

// runLendingPhase has every client grant and repay loans for o.duration;
// with rate > 0 the clients together are paced to rate cycles (one loan +
// its repayment) per second.
func runLendingPhase(ctx context.Context, c *bench.Client, name, run string, lines []string, lineCur map[string]string, o lendingBenchOpts, rate float64) *lendingPhase {
	p := &lendingPhase{name: name, rate: rate, errs: map[string]int64{}}
	modes := []string{lending.ModeDealer, lending.ModeManufacturer, lending.ModeSplit}
	today := time.Now().UTC()
	start := today.AddDate(0, 0, -30).Format(lending.DateLayout)
	due := today.AddDate(0, 0, 90).Format(lending.DateLayout)
	ids := make([][]int64, o.clients)
	t0 := time.Now()
	deadline := t0.Add(o.duration)
	var wg sync.WaitGroup
	for i := range o.clients {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(i), uint64(t0.UnixNano())))
			var interval time.Duration
			if rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(o.clients) / rate)
			}
			next := time.Now().Add(time.Duration(rng.Int64N(int64(interval) + 1)))
			for n := 0; ; n++ {
				if interval > 0 {
					if !next.Before(deadline) {
						return
					}
					time.Sleep(time.Until(next))
					next = next.Add(interval)
				}
				if !time.Now().Before(deadline) {
					return
				}
				line := lines[(i+n*o.clients)%len(lines)]
				mode := modes[(i+n)%len(modes)]
				body := map[string]any{
					"loan_no":          fmt.Sprintf("LB-%s-%s-%d-%d", run, name, i, n),
					"borrower_id":      line,
					"currency":         lineCur[line],
					"principal_minor":  o.principal,
					"annual_rate_bps":  850,
					"penalty_rate_bps": 1800,
					"late_fee_minor":   5000,
					"start_date":       start,
					"due_date":         due,
					"interest_mode":    mode,
					"dealer_id":        line,
				}
				switch mode {
				case lending.ModeManufacturer:
					body["manufacturer_id"] = "bench-oem"
				case lending.ModeSplit:
					body["manufacturer_id"] = "bench-oem"
					body["manufacturer_share_bps"] = 2500
				}
				var loan benchLoan
				var prob bench.Problem
				ts := time.Now()
				st, err := c.Do(ctx, http.MethodPost, "/v1/loans", body, &loan, &prob)
				p.loanLat.Add(time.Since(ts))
				if err != nil || st != http.StatusCreated {
					p.fail("loan", st, err, &prob)
					continue
				}
				p.loans.Add(1)

				var rep benchRepayment
				prob = bench.Problem{}
				ts = time.Now()
				st, err = c.Do(ctx, http.MethodPost, fmt.Sprintf("/v1/loans/%d/repayments", loan.ID), map[string]any{
					"identifier":   "full",
					"payer":        "DEALER",
					"amount_minor": o.principal,
					"value_date":   loan.StartDate,
				}, &rep, &prob)
				p.repayLat.Add(time.Since(ts))
				if err != nil || st != http.StatusCreated {
					p.fail("repayment", st, err, &prob)
					continue
				}
				p.repayments.Add(1)
				if rep.Allocation.PrincipalMinor > 0 {
					ids[i] = append(ids[i], rep.ID)
				}
			}
		})
	}
	wg.Wait()
	p.elapsed = time.Since(t0)
	for _, s := range ids {
		p.repIDs = append(p.repIDs, s...)
	}
	return p
}

// waitRestored polls until every repayment in ids has its
// credit_restoration row and returns how long that took.
func waitRestored(ctx context.Context, pool *pgxpool.Pool, ids []int64, timeout time.Duration) (time.Duration, error) {
	t0 := time.Now()
	for {
		var left int64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM unnest($1::bigint[]) AS t(id)
			WHERE NOT EXISTS (SELECT 1 FROM credit_restoration c WHERE c.repayment_id = t.id)`, ids).Scan(&left); err != nil {
			return 0, fmt.Errorf("count unrestored repayments: %w", err)
		}
		if left == 0 {
			return time.Since(t0), nil
		}
		if time.Since(t0) > timeout {
			return 0, fmt.Errorf("%d of %d repayments still not restored after %s", left, len(ids), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func benchLendingLoad(ctx context.Context, dsn string, o lendingBenchOpts, stdout, stderr io.Writer) (*lendingResult, error) {
	srv, err := bench.StartServer(ctx, dsn, stderr, func(c *config.Config) {
		if o.workers > 0 {
			c.Workers = o.workers
		}
	})
	if err != nil {
		return nil, err
	}
	defer srv.Stop() //nolint:errcheck
	pool, err := server.Connect(ctx, dsn, 4, 0, nil)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	c := bench.NewClient(srv, o.clients)

	suffix := make([]byte, 2)
	_, _ = rand.Read(suffix)
	run := time.Now().Format("0102-150405") + "-" + hex.EncodeToString(suffix)
	lines := make([]string, o.borrowers)
	lineCur := map[string]string{}
	const limit = 1_000_000_000_000 // never the constraint: this measures throughput, not refusals
	for j := range lines {
		lines[j] = fmt.Sprintf("lb-%s-%d", run, j)
		lineCur[lines[j]] = o.currencies[j%len(o.currencies)]
		var prob bench.Problem
		st, err := c.Do(ctx, http.MethodPut, "/v1/credit-lines/"+lines[j], map[string]any{"limit_minor": limit, "currency": lineCur[lines[j]]}, nil, &prob)
		if err != nil || st != http.StatusCreated {
			return nil, fmt.Errorf("create credit line %s: status %d %s: %v", lines[j], st, prob.Code, err)
		}
	}
	curSet := map[string]bool{}
	for _, v := range lineCur {
		curSet[v] = true
	}
	curs := slices.Sorted(maps.Keys(curSet))
	workers := "default"
	if o.workers > 0 {
		workers = fmt.Sprint(o.workers)
	}
	fmt.Fprintf(stdout, "lending: %d clients, %d credit line(s) in %s, principal %d, %s per phase, workers %s\n",
		o.clients, len(lines), strings.Join(curs, "+"), o.principal, o.duration, workers)

	var phases []*lendingPhase
	runPhase := func(name string, rate float64) (*lendingPhase, error) {
		stop := make(chan struct{})
		waitsDone := make(chan struct{})
		var waits map[string]int
		var samples int
		go func() { waits, samples = sampleWaits(ctx, pool, stop); close(waitsDone) }()
		p := runLendingPhase(ctx, c, name, run, lines, lineCur, o, rate)
		close(stop)
		<-waitsDone
		p.waits, p.samples = waits, samples
		phases = append(phases, p)
		d, err := waitRestored(ctx, pool, p.repIDs, o.drainTimeout)
		if err != nil {
			return nil, fmt.Errorf("phase %s: %w", name, err)
		}
		p.drain = d
		return p, nil
	}
	if o.rate > 0 {
		if _, err := runPhase("paced", o.rate); err != nil {
			return nil, err
		}
	} else {
		p, err := runPhase("max", 0)
		if err != nil {
			return nil, err
		}
		if o.halfLoad {
			if _, err := runPhase("half", float64(p.repayments.Load())/p.elapsed.Seconds()/2); err != nil {
				return nil, err
			}
		}
	}

	res := &lendingResult{}
	for k, p := range phases {
		rows, err := pool.Query(ctx, `SELECT extract(epoch FROM c.restored_at - r.created_at)::float8
			FROM repayment r JOIN credit_restoration c ON c.repayment_id = r.id WHERE r.id = ANY($1::bigint[])`, p.repIDs)
		if err != nil {
			return nil, fmt.Errorf("read restore lag: %w", err)
		}
		for rows.Next() {
			var s float64
			if err := rows.Scan(&s); err != nil {
				rows.Close()
				return nil, err
			}
			p.restoreLag.Add(time.Duration(s * float64(time.Second)))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		// River marks jobs completed in batches a little after they ran.
		var retried, notCompleted int64
		for wait := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if err := pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE attempt > 1), count(*) FILTER (WHERE state <> 'completed')
				FROM river_job WHERE kind = $1 AND (args->>'repayment_id')::bigint = ANY($2::bigint[])`, lending.KindCreditRestore, p.repIDs).Scan(&retried, &notCompleted); err != nil {
				return nil, fmt.Errorf("read credit.restore jobs: %w", err)
			}
			if notCompleted == 0 || time.Now().After(wait) {
				break
			}
		}

		loansPS := float64(p.loans.Load()) / p.elapsed.Seconds()
		repsPS := float64(p.repayments.Load()) / p.elapsed.Seconds()
		if k == 0 {
			res.loansPerSec, res.repaymentsPerSec = loansPS, repsPS
		}
		paced := "flat out"
		if p.rate > 0 {
			paced = fmt.Sprintf("paced at %.0f loans+repayments/s", p.rate)
		}
		fmt.Fprintf(stdout, "  phase %-5s (%s): %d loans = %.0f loans/s, %d repayments = %.0f repayments/s in %s\n",
			p.name, paced, p.loans.Load(), loansPS, p.repayments.Load(), repsPS, p.elapsed.Round(time.Millisecond))
		fmt.Fprintf(stdout, "    latency: loan p50 %s, p99 %s; repayment p50 %s, p99 %s\n",
			p.loanLat.Percentile(50).Round(time.Microsecond), p.loanLat.Percentile(99).Round(time.Microsecond),
			p.repayLat.Percentile(50).Round(time.Microsecond), p.repayLat.Percentile(99).Round(time.Microsecond))
		if len(p.errs) == 0 {
			fmt.Fprintf(stdout, "    errors: none\n")
		} else {
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(p.errs)) {
				parts = append(parts, fmt.Sprintf("%s ×%d", k, p.errs[k]))
			}
			fmt.Fprintf(stdout, "    errors: %s\n", strings.Join(parts, ", "))
		}
		if total := sumValues(p.waits); total > 0 {
			var parts []string
			keys := slices.SortedFunc(maps.Keys(p.waits), func(a, b string) int { return p.waits[b] - p.waits[a] })
			for _, k := range keys[:min(len(keys), 6)] {
				parts = append(parts, fmt.Sprintf("%s %.0f%%", k, 100*float64(p.waits[k])/float64(total)))
			}
			fmt.Fprintf(stdout, "    Postgres (active backends of this database, %d samples, %.1f active on average): %s\n",
				p.samples, float64(total)/float64(max(p.samples, 1)), strings.Join(parts, ", "))
		}
		fmt.Fprintf(stdout, "    restore lag (restored_at − repayment.created_at, %d restorations): p50 %s, p95 %s, p99 %s, max %s; last restored %s after the load stopped; credit.restore jobs retried %d, not completed %d\n",
			p.restoreLag.Count(), p.restoreLag.Percentile(50).Round(time.Millisecond), p.restoreLag.Percentile(95).Round(time.Millisecond),
			p.restoreLag.Percentile(99).Round(time.Millisecond), p.restoreLag.Percentile(100).Round(time.Millisecond),
			p.drain.Round(time.Millisecond), retried, notCompleted)
	}

	// Invariant: every line's used_minor (as the API shows it) equals the
	// principal its loans still owe.
	owed := map[string]int64{}
	var loans, repaid int64
	rows, err := pool.Query(ctx, `SELECT borrower_id, sum(principal_outstanding_minor)::bigint, count(*), count(*) FILTER (WHERE status = 'REPAID')
		FROM loan WHERE borrower_id = ANY($1::text[]) GROUP BY borrower_id`, lines)
	if err != nil {
		return nil, fmt.Errorf("read loans: %w", err)
	}
	for rows.Next() {
		var b string
		var sum, n, r int64
		if err := rows.Scan(&b, &sum, &n, &r); err != nil {
			rows.Close()
			return nil, err
		}
		owed[b], loans, repaid = sum, loans+n, repaid+r
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var bad, zero int
	var used, outstanding int64
	for _, l := range lines {
		var cl benchCreditLine
		if st, err := c.Do(ctx, http.MethodGet, "/v1/credit-lines/"+l, nil, &cl, nil); err != nil || st != http.StatusOK {
			return nil, fmt.Errorf("get credit line %s: status %d: %v", l, st, err)
		}
		used += cl.UsedMinor
		outstanding += owed[l]
		if cl.UsedMinor != owed[l] {
			bad++
		}
		if cl.UsedMinor == 0 {
			zero++
		}
	}
	res.invariantOK = bad == 0
	verdict := "PASS"
	if !res.invariantOK {
		verdict = "FAIL"
	}
	fmt.Fprintf(stdout, "  invariant used_minor == Σ principal_outstanding of the line's loans: %s (%d/%d lines match; Σ used %d, Σ outstanding %d; %d loans, %d REPAID; %d lines at 0)\n",
		verdict, len(lines)-bad, len(lines), used, outstanding, loans, repaid, zero)
	return res, nil
}

func sumValues(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// sampleWaits samples, every 50 ms until stop is closed, what this
// database's active client backends are doing: the wait event (CPU when
// none) and the statement (its sqlc name, or its first word). It returns
// the counts and the number of samples.
func sampleWaits(ctx context.Context, pool *pgxpool.Pool, stop <-chan struct{}) (map[string]int, int) {
	out := map[string]int{}
	samples := 0
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return out, samples
		case <-ctx.Done():
			return out, samples
		case <-t.C:
		}
		rows, err := pool.Query(ctx, `SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), query
			FROM pg_stat_activity
			WHERE datname = current_database() AND state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()`)
		if err != nil {
			continue
		}
		samples++
		for rows.Next() {
			var wait, query string
			if rows.Scan(&wait, &query) != nil {
				continue
			}
			out[wait+" ("+statementName(query)+")"]++
		}
		rows.Close()
	}
}

// statementName is a query's sqlc name ("-- name: X :one") or its first
// word in lower case.
func statementName(q string) string {
	q = strings.TrimSpace(q)
	if rest, ok := strings.CutPrefix(q, "-- name: "); ok {
		if f := strings.Fields(rest); len(f) > 0 {
			return f[0]
		}
	}
	if f := strings.Fields(q); len(f) > 0 {
		return strings.ToLower(strings.TrimSuffix(f[0], ";"))
	}
	return "?"
}
