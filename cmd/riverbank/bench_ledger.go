package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/riverqueue/river"

	"riverbank/internal/bench"
	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/events"
	"riverbank/internal/ledger"
	"riverbank/internal/pgcluster"
	"riverbank/internal/server"
	"riverbank/jobs"
)

func init() {
	benchScenarios["ledger"] = benchScenario{
		summary: "hot-account postings through the API (--mode api) or 100k pending postings applied by workers (--mode apply)",
		run:     runBenchLedger,
	}
}

// benchDatabase returns the database to benchmark: DATABASE_URL if set,
// else a throwaway private cluster.
func benchDatabase(ctx context.Context, dsn string, logger *slog.Logger, stdout io.Writer) (string, func(), error) {
	if dsn != "" {
		return dsn, func() {}, nil
	}
	fmt.Fprintln(stdout, "no DATABASE_URL: starting a throwaway private Postgres")
	c, err := pgcluster.StartAny(ctx, pgcluster.Options{Logger: logger, Database: "riverbank_bench"})
	if err != nil {
		return "", nil, err
	}
	return c.URL, func() { _ = c.Stop(context.WithoutCancel(ctx)) }, nil
}

type ledgerBenchOpts struct {
	mode       string
	clients    int
	duration   time.Duration
	postings   int
	urgent     bool
	pgbench    bool
	batch      int
	statements bool
}

func runBenchLedger(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench ledger", `Ledger benchmark.
  --mode api:   N clients POST journal entries that all credit one hot account
                for --duration, then wait for the ledger queue to drain.
  --mode apply: insert --postings pending postings into one hot account
                directly, then time their application by ledger.apply alone.
Both print figures next to pgbench -N (simple update) with the same client
count, run on the same database server right after.`, stderr)
	loader := config.Register(fs, getenv, config.DatabaseOnly)
	var o ledgerBenchOpts
	fs.StringVar(&o.mode, "mode", "api", "api or apply")
	fs.IntVar(&o.clients, "clients", 8, "concurrent HTTP clients (and pgbench clients)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "how long clients post (api mode) and pgbench runs")
	fs.IntVar(&o.postings, "postings", 100000, "pending postings to apply (apply mode)")
	fs.BoolVar(&o.urgent, "urgent", true, "post urgent entries (apply enqueued in the entry's transaction)")
	fs.BoolVar(&o.pgbench, "pgbench", true, "also run pgbench -N for the ratio")
	fs.IntVar(&o.batch, "batch", ledger.ApplyBatchSize, "postings per apply transaction")
	fs.BoolVar(&o.statements, "statements", true, "api mode: print the pg_stat_statements breakdown per entry (resets the server's statistics)")
	feed := fs.Bool("events", true, "api mode: append the entries' journal_entry.posted events (false measures the events feed's cost; a switch only benchmarks have)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	events.DisableAppendsForBenchmark(!*feed)
	defer events.DisableAppendsForBenchmark(false)
	cfg, err := loader.Load(fs)
	if err != nil {
		return err
	}
	if o.clients < 1 || o.duration <= 0 || o.postings < 1 || o.batch < 1 {
		return fmt.Errorf("--clients, --duration, --postings and --batch must be positive")
	}
	logger := newLogger(stderr, slog.LevelWarn)
	dsn, cleanup, err := benchDatabase(ctx, cfg.DatabaseURL, logger, stdout)
	if err != nil {
		return err
	}
	defer cleanup()

	fmt.Fprintf(stdout, "machine: %s\n", bench.Machine())
	if *cpuprofile != "" {
		stop, err := bench.StartCPUProfile(*cpuprofile)
		if err != nil {
			return err
		}
		defer stop()
	}
	var rate float64
	switch o.mode {
	case "api":
		rate, err = benchLedgerAPI(ctx, dsn, o, stdout, stderr)
	case "apply":
		rate, err = benchLedgerApply(ctx, dsn, o, stdout, stderr)
	default:
		return fmt.Errorf("unknown --mode %q (api or apply)", o.mode)
	}
	if err != nil {
		return err
	}
	if o.pgbench {
		tps, err := bench.Pgbench(ctx, dsn, o.clients, o.duration, "simple-update")
		if err != nil {
			return fmt.Errorf("pgbench: %w", err)
		}
		fmt.Fprintf(stdout, "pgbench -N (simple update), %d clients, %s: %.0f tps\n", o.clients, o.duration, tps)
		fmt.Fprintf(stdout, "ratio: %.2f × pgbench -N\n", rate/tps)
	}
	return nil
}

type accountView struct {
	BalanceMinor    int64 `json:"balance_minor"`
	PendingPostings int64 `json:"pending_postings"`
	AppliedPostings int64 `json:"applied_postings"`
}

func benchLedgerAPI(ctx context.Context, dsn string, o ledgerBenchOpts, stdout, stderr io.Writer) (float64, error) {
	srv, err := bench.StartServer(ctx, dsn, stderr, func(c *config.Config) { c.Workers = max(c.Workers, o.clients) })
	if err != nil {
		return 0, err
	}
	defer srv.Stop() //nolint:errcheck
	c := bench.NewClient(srv, o.clients)
	run := time.Now().Format("150405.000")
	hot := "bench:hot:" + run
	accounts := []string{hot}
	for i := range o.clients {
		accounts = append(accounts, fmt.Sprintf("bench:src:%s:%d", run, i))
	}
	for i, code := range accounts {
		typ := "ASSET"
		if i == 0 {
			typ = "LIABILITY"
		}
		st, err := c.Do(ctx, http.MethodPost, "/v1/accounts", map[string]string{"code": code, "name": code, "type": typ, "currency": "CNY"}, nil, nil)
		if err != nil || st != http.StatusCreated {
			return 0, fmt.Errorf("create account %s: status %d: %v", code, st, err)
		}
	}

	stmts := statementsStart(ctx, o.statements, dsn, stdout)
	var lat bench.Latencies
	var accepted, failed atomic.Int64
	start := time.Now()
	deadline := start.Add(o.duration)
	var wg sync.WaitGroup
	for i := range o.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			src := accounts[i+1]
			for n := 0; time.Now().Before(deadline); n++ {
				amt := int64(n%97 + 1)
				body := map[string]any{
					"idempotency_key": fmt.Sprintf("bench:%s:%d:%d", run, i, n),
					"description":     "bench",
					"urgent":          o.urgent,
					"postings":        []map[string]any{{"account": src, "amount_minor": amt}, {"account": hot, "amount_minor": -amt}},
				}
				t0 := time.Now()
				st, err := c.Do(ctx, http.MethodPost, "/v1/journal-entries", body, nil, nil)
				lat.Add(time.Since(t0))
				if err != nil || st != http.StatusCreated {
					failed.Add(1)
					continue
				}
				accepted.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	// Drain: non-urgent entries wait for the sweep, so only wait when urgent.
	drainStart := time.Now()
	var hv accountView
	for {
		if _, err := c.Do(ctx, http.MethodGet, "/v1/accounts/"+hot, nil, &hv, nil); err != nil {
			return 0, err
		}
		if hv.PendingPostings == 0 || !o.urgent || time.Since(drainStart) > 5*time.Minute {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	drain := time.Since(drainStart)
	entriesPerSec := float64(accepted.Load()) / elapsed.Seconds()
	fmt.Fprintf(stdout, "ledger api: %d clients, %s, urgent=%v\n", o.clients, o.duration, o.urgent)
	fmt.Fprintf(stdout, "  entries accepted: %d (%.0f/s), failed: %d\n", accepted.Load(), entriesPerSec, failed.Load())
	fmt.Fprintf(stdout, "  request latency: p50 %s, p99 %s, max %s\n", lat.Percentile(50).Round(time.Microsecond), lat.Percentile(99).Round(time.Microsecond), lat.Percentile(100).Round(time.Microsecond))
	fmt.Fprintf(stdout, "  hot account: %d postings applied, %d pending; drain after load stopped: %s\n", hv.AppliedPostings, hv.PendingPostings, drain.Round(time.Millisecond))
	fmt.Fprintf(stdout, "  postings/s applied into the hot account (load + drain): %.0f\n", float64(hv.AppliedPostings)/(elapsed+drain).Seconds())
	statementsPrint(ctx, stmts, dsn, stdout, "entry", accepted.Load())
	fmt.Fprintf(stdout, "  peak RSS (server + load generator, one process): %s\n", bench.MiB(bench.PeakRSS()))
	return entriesPerSec, nil
}

func benchLedgerApply(ctx context.Context, dsn string, o ledgerBenchOpts, stdout, stderr io.Writer) (float64, error) {
	pool, err := server.Connect(ctx, dsn, 20, 0, nil)
	if err != nil {
		return 0, err
	}
	defer pool.Close()
	m, err := db.NewMigrator(pool)
	if err != nil {
		return 0, err
	}
	if _, err := m.Migrate(ctx); err != nil {
		return 0, err
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	cfgLoader := config.Register(fs, func(string) string { return "" }, config.All)
	_ = fs.Parse(nil)
	cfg, err := cfgLoader.Load(fs)
	if err != nil {
		return 0, err
	}
	inserter, err := jobs.NewClient(pool, cfg, logger, nil)
	if err != nil {
		return 0, err
	}
	store := db.NewStore(pool, inserter)
	svc := ledger.NewService(store)
	run := time.Now().Format("150405.000")
	hot, _, err := svc.CreateAccount(ctx, ledger.AccountInput{Code: "bench:hot:" + run, Name: "hot", Type: "LIABILITY", Currency: "CNY"})
	if err != nil {
		return 0, err
	}
	src, _, err := svc.CreateAccount(ctx, ledger.AccountInput{Code: "bench:src:" + run, Name: "src", Type: "ASSET", Currency: "CNY"})
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	if _, err := store.Queries().BenchInsertPendingEntries(ctx, db.BenchInsertPendingEntriesParams{
		KeyPrefix: "bench:" + run + ":", Currency: "CNY", N: int32(o.postings), DebitAccount: src.ID, CreditAccount: hot.ID, Amount: 3,
	}); err != nil {
		return 0, fmt.Errorf("insert pending postings: %w", err)
	}
	fmt.Fprintf(stdout, "inserted %d pending entries (%d postings on the hot account) in %s\n", o.postings, o.postings, time.Since(t0).Round(time.Millisecond))

	workers := river.NewWorkers()
	river.AddWorker(workers, &jobs.ApplyWorker{Store: store, BatchSize: o.batch, Budget: time.Hour})
	client, err := jobs.NewClient(pool, cfg, logger, &jobs.Registration{Workers: workers})
	if err != nil {
		return 0, err
	}
	if err := client.Start(ctx); err != nil {
		return 0, err
	}
	defer client.Stop(context.WithoutCancel(ctx)) //nolint:errcheck

	start := time.Now()
	if _, err := client.Insert(ctx, ledger.ApplyArgs{AccountID: hot.ID}, nil); err != nil {
		return 0, err
	}
	for {
		pending, err := store.Queries().HasPendingPostings(ctx, hot.ID)
		if err != nil {
			return 0, err
		}
		if !pending {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	acc, err := svc.GetAccount(ctx, hot.Code, "")
	if err != nil {
		return 0, err
	}
	rate := float64(o.postings) / took.Seconds()
	fmt.Fprintf(stdout, "ledger apply: %d pending postings on one account drained in %s (batch %d): %.0f postings/s\n", o.postings, took.Round(time.Millisecond), o.batch, rate)
	fmt.Fprintf(stdout, "  hot balance %d (expected %d), applied_postings %d\n", acc.BalanceMinor, -3*int64(o.postings), acc.AppliedPostings)
	if acc.BalanceMinor != -3*int64(o.postings) {
		return 0, fmt.Errorf("hot balance %d, expected %d", acc.BalanceMinor, -3*int64(o.postings))
	}
	fmt.Fprintf(stdout, "  peak RSS: %s\n", bench.MiB(bench.PeakRSS()))
	return rate, nil
}
