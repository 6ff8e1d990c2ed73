package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"riverbank/internal/bench"
	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/server"
)

func init() {
	benchScenarios["scaleout"] = benchScenario{
		summary: "catalogue orders spread round-robin over 1, 2, 3 ... `serve` processes on one database; orders/s per instance count vs pgbench tpcb-like",
		run:     runBenchScaleout,
	}
}

type scaleoutOpts struct {
	instances []int
	binary    string
	clients   int
	duration  time.Duration
	warmup    time.Duration
	skus      int
	maxLines  int
	workers   int
	pgbench   bool
}

// scaleoutResult is one instance count's phase.
type scaleoutResult struct {
	instances int
	phase     *phaseResult
	confirm   bench.Latencies
	peakRSS   []int64
	cpu       time.Duration // user + system CPU of the server processes during the phase
	xacts     int64         // transactions committed or rolled back in the database during the phase
}

func runBenchScaleout(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench scaleout", `Scale-out benchmark: for each count in --instances, start that many
`+"`riverbank serve`"+` processes (this binary, or --binary) on one database, each on its own
free port, and have --clients HTTP clients place catalogue orders (1..--max-lines lines
over --skus products) for --duration, each request sent to the next instance in turn.
After a --warmup phase that is not counted, prints orders/s, request latency,
create→CONFIRMED latency (the order.confirm jobs, worked by every instance with SKIP LOCKED),
each process's peak RSS and the servers' CPU per order; then pgbench tpcb-like with the same
client count and duration on the same server, and each count's ratio to it. Orders are not
paid and expire after an hour. DATABASE_URL (or --database-url) is required; it is migrated.
On a machine with few cores, Postgres and every instance share them: more instances add
processes, not CPU, so expect little gain there; the figure that transfers is the ratio.`, stderr)
	loader := config.Register(fs, getenv, config.DatabaseOnly)
	var o scaleoutOpts
	instances := fs.String("instances", "1,2,3", "comma-separated instance counts to measure, in order")
	fs.StringVar(&o.binary, "binary", "", "riverbank binary to run as `serve` (default: this executable)")
	fs.IntVar(&o.clients, "clients", 16, "concurrent HTTP clients (and pgbench clients)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured load per instance count (and pgbench)")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load before each measurement (0: none)")
	fs.IntVar(&o.skus, "skus", 200, "catalogue size")
	fs.IntVar(&o.maxLines, "max-lines", 3, "lines per order: 1..max-lines")
	fs.IntVar(&o.workers, "workers", 0, "RIVERBANK_WORKERS of every instance (0: the default)")
	fs.BoolVar(&o.pgbench, "pgbench", true, "also run pgbench tpcb-like for the ratio")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loader.Load(fs)
	if err != nil {
		return err
	}
	if err := cfg.RequireDatabase(); err != nil {
		return err
	}
	for _, f := range strings.Split(*instances, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 32 {
			return fmt.Errorf("--instances: %q is not a count from 1 to 32", f)
		}
		o.instances = append(o.instances, n)
	}
	if o.clients < 1 || o.duration <= 0 || o.warmup < 0 || o.skus < 1 || o.maxLines < 1 || o.maxLines > 100 || o.workers < 0 {
		return errors.New("--clients, --duration, --skus must be positive, --warmup and --workers not negative, --max-lines 1..100")
	}

	// Migrate once, here: instances then start on a current schema. The
	// pool stays open to read the database's transaction counters.
	pool, err := server.Connect(ctx, cfg.DatabaseURL, 2, 0, nil)
	if err != nil {
		return err
	}
	defer pool.Close()
	m, err := db.NewMigrator(pool)
	if err == nil {
		_, err = m.Migrate(ctx)
	}
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}

	fmt.Fprintf(stdout, "machine: %s\n", bench.Machine())
	fmt.Fprintf(stdout, "catalogue orders: %d clients, %d skus, 1..%d lines, %s per instance count after %s warm-up\n", o.clients, o.skus, o.maxLines, o.duration, o.warmup)
	run := time.Now().Format("150405.000")
	skus := make([]string, o.skus)
	for i := range skus {
		skus[i] = fmt.Sprintf("SCALE-%s-%d", run, i)
	}
	var results []*scaleoutResult
	for i, n := range o.instances {
		r, err := benchScaleoutOnce(ctx, pool, cfg.DatabaseURL, o, n, fmt.Sprintf("%s-%d", run, i), skus, stderr)
		if err != nil {
			return fmt.Errorf("%d instances: %w", n, err)
		}
		results = append(results, r)
		fmt.Fprintf(stdout, "  %d instance(s): %.0f orders/s\n", n, float64(r.phase.created)/r.phase.elapsed.Seconds())
		if r.phase.failed > 0 {
			return fmt.Errorf("%d instances: %d order requests failed (see the servers' output above)", n, r.phase.failed)
		}
	}

	var tps float64
	if o.pgbench {
		if tps, err = bench.Pgbench(ctx, cfg.DatabaseURL, o.clients, o.duration, "tpcb-like"); err != nil {
			return fmt.Errorf("pgbench: %w", err)
		}
	}
	w := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "instances\torders/s\tvs 1\tvs pgbench\trequest p50\tp99\tconfirm p50\tp99\tserver CPU/order\tDB xacts/order\tpeak RSS per process\t")
	rateOf := func(r *scaleoutResult) float64 { return float64(r.phase.created) / r.phase.elapsed.Seconds() }
	base := rateOf(results[0]) // "vs 1": the first 1-instance count, else the first count
	for _, r := range results {
		if r.instances == 1 {
			base = rateOf(r)
			break
		}
	}
	for _, r := range results {
		rate := rateOf(r)
		ratio := "-"
		if tps > 0 {
			ratio = fmt.Sprintf("%.2f", rate/tps)
		}
		rss := make([]string, len(r.peakRSS))
		for i, b := range r.peakRSS {
			rss[i] = fmt.Sprintf("%.0f", float64(b)/(1<<20))
		}
		cpuPer, xactsPer := time.Duration(0), 0.0
		if r.phase.created > 0 {
			cpuPer = r.cpu / time.Duration(r.phase.created)
			xactsPer = float64(r.xacts) / float64(r.phase.created)
		}
		fmt.Fprintf(w, "%d\t%.0f\t%.2f×\t%s\t%s\t%s\t%s\t%s\t%s\t%.1f\t%s MiB\t\n", r.instances, rate, rate/base, ratio,
			r.phase.request.Percentile(50).Round(100*time.Microsecond), r.phase.request.Percentile(99).Round(100*time.Microsecond),
			r.confirm.Percentile(50).Round(time.Millisecond), r.confirm.Percentile(99).Round(time.Millisecond),
			cpuPer.Round(10*time.Microsecond), xactsPer, strings.Join(rss, " / "))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if tps > 0 {
		fmt.Fprintf(stdout, "pgbench tpcb-like, %d clients, %s: %.0f tps\n", o.clients, o.duration, tps)
	}
	return nil
}

// benchScaleoutOnce starts n instances, loads them, waits for every order
// to be confirmed, and stops them.
func benchScaleoutOnce(ctx context.Context, pool *pgxpool.Pool, dsn string, o scaleoutOpts, n int, run string, skus []string, stderr io.Writer) (*scaleoutResult, error) {
	env := []string{"RIVERBANK_ORDER_PAYMENT_TIMEOUT=1h"}
	if o.workers > 0 {
		env = append(env, "RIVERBANK_WORKERS="+strconv.Itoa(o.workers))
	}
	procs := make([]*bench.Process, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			procs[i], errs[i] = bench.StartServerProcess(ctx, bench.ProcessOptions{Binary: o.binary, DatabaseURL: dsn, Env: env, Output: stderr})
		})
	}
	wg.Wait()
	defer func() {
		for _, p := range procs {
			if p != nil {
				_ = p.Stop(30 * time.Second)
			}
		}
	}()
	endpoints := make([]bench.Endpoint, 0, n)
	for i, p := range procs {
		if errs[i] != nil {
			return nil, errs[i]
		}
		endpoints = append(endpoints, p.Endpoint())
	}
	c := bench.NewClientFor(o.clients, endpoints...)
	for _, sku := range skus {
		st, err := c.Do(ctx, http.MethodPut, "/v1/products/"+sku, map[string]any{"name": sku, "price_minor": 100, "currency": "CNY", "stock": 1_000_000_000}, nil, nil)
		if err != nil || (st != http.StatusCreated && st != http.StatusOK) {
			return nil, fmt.Errorf("put product %s: status %d: %v", sku, st, err)
		}
	}
	lo := ordersBenchOpts{clients: o.clients, duration: o.warmup, maxLines: o.maxLines}
	name := fmt.Sprintf("x%d", n) // run already tells repeated counts apart
	if o.warmup > 0 {
		runCataloguePhase(ctx, c, name+"w", run, skus, lo, 0)
	}
	cpu0, err := processesCPU(procs)
	if err != nil {
		return nil, err
	}
	x0, err := databaseXacts(ctx, pool)
	if err != nil {
		return nil, err
	}
	lo.duration = o.duration
	r := &scaleoutResult{instances: n, phase: runCataloguePhase(ctx, c, name, run, skus, lo, 0)}
	cpu1, err := processesCPU(procs)
	if err != nil {
		return nil, err
	}
	x1, err := databaseXacts(ctx, pool)
	if err != nil {
		return nil, err
	}
	r.cpu, r.xacts = cpu1-cpu0, x1-x0
	// Every order confirmed by its job before the next count starts.
	if err := waitNoneIn(ctx, c, r.phase.buyers, []string{"CREATED"}, 2*time.Minute); err != nil {
		return nil, err
	}
	for _, b := range r.phase.buyers {
		os, err := listBuyerOrders(ctx, c, b, "", 0)
		if err != nil {
			return nil, err
		}
		for _, od := range os {
			if od.ConfirmedAt != nil {
				r.confirm.Add(od.ConfirmedAt.Sub(od.CreatedAt))
			}
		}
	}
	for _, p := range procs {
		rss, err := p.PeakRSS()
		if err != nil {
			return nil, err
		}
		r.peakRSS = append(r.peakRSS, rss)
	}
	return r, nil
}

// databaseXacts is the number of transactions the current database has
// committed or rolled back (pg_stat_database, updated by each backend at
// the end of a transaction, or at most every second while it is busy).
func databaseXacts(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	// A new transaction sees fresh statistics (they are cached per
	// transaction otherwise).
	var n int64
	err := pool.QueryRow(ctx, "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()").Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("read transaction counters: %w", err)
	}
	return n, nil
}

// processesCPU is the user + system CPU time the processes have used.
func processesCPU(procs []*bench.Process) (time.Duration, error) {
	var total time.Duration
	for _, p := range procs {
		d, err := p.CPUTime()
		if err != nil {
			return 0, err
		}
		total += d
	}
	return total, nil
}
