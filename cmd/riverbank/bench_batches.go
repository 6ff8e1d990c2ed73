package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"riverbank/internal/bench"
	"riverbank/internal/config"
)

func init() {
	benchScenarios["batches"] = benchScenario{
		summary: "N journal entries as one batch vs. the same through POST /v1/journal-entries at --clients",
		run:     runBenchBatches,
	}
}

type batchesBenchOpts struct {
	items      int
	clients    int
	urgent     bool
	single     bool
	batchFirst bool
}

func runBenchBatches(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench batches", `Batch benchmark: --items journal entries written two ways on one server.
  single: --clients HTTP clients share the entries, one POST /v1/journal-entries each;
  batch:  one POST /v1/batches with every entry, timed until GET shows COMPLETED.
Both write the same shape of entry over the same accounts; items/s of each and
the ratio batch/single are printed.`, stderr)
	loader := config.Register(fs, getenv, config.DatabaseOnly)
	var o batchesBenchOpts
	fs.IntVar(&o.items, "items", 10000, "journal entries per run (1..10000)")
	fs.IntVar(&o.clients, "clients", 16, "concurrent HTTP clients of the single-endpoint run")
	fs.BoolVar(&o.urgent, "urgent", false, "post urgent entries (ledger.apply enqueued with each; a batch then does each in a transaction of its own)")
	fs.BoolVar(&o.batchFirst, "batch-first", false, "run the batch before the single-endpoint run")
	fs.BoolVar(&o.single, "single", true, "run the single-endpoint half (false: the batch alone, e.g. to profile it)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loader.Load(fs)
	if err != nil {
		return err
	}
	if o.items < 1 || o.items > 10000 || o.clients < 1 {
		return fmt.Errorf("--items must be 1..10000 and --clients positive")
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

	srv, err := bench.StartServer(ctx, dsn, stderr, func(c *config.Config) { c.Workers = max(c.Workers, o.clients) })
	if err != nil {
		return err
	}
	defer srv.Stop() //nolint:errcheck
	c := bench.NewClient(srv, o.clients)
	run := time.Now().Format("150405.000")
	// Sixteen pairs of accounts; entry i moves money from pair i%16's
	// first account to its second, in both runs.
	const pairs = 16
	var debit, credit [pairs]string
	for i := range pairs {
		debit[i], credit[i] = fmt.Sprintf("bench:b:%s:d%d", run, i), fmt.Sprintf("bench:b:%s:c%d", run, i)
		for code, typ := range map[string]string{debit[i]: "ASSET", credit[i]: "LIABILITY"} {
			st, err := c.Do(ctx, http.MethodPost, "/v1/accounts", map[string]string{"code": code, "name": code, "type": typ, "currency": "CNY"}, nil, nil)
			if err != nil || st != http.StatusCreated {
				return fmt.Errorf("create account %s: status %d: %v", code, st, err)
			}
		}
	}
	entry := func(prefix string, i int) map[string]any {
		amt := int64(i%97 + 1)
		return map[string]any{
			"idempotency_key": fmt.Sprintf("bench:%s:%s:%d", run, prefix, i),
			"description":     "bench",
			"urgent":          o.urgent,
			"currency":        "CNY",
			"postings":        []map[string]any{{"account": debit[i%pairs], "amount_minor": amt}, {"account": credit[i%pairs], "amount_minor": -amt}},
		}
	}

	// drain waits until the ledger has applied every posting of the
	// accounts, so the next run does not compete with applying this one's.
	drain := func() error {
		deadline := time.Now().Add(5 * time.Minute)
		for _, code := range append(debit[:], credit[:]...) {
			for {
				var a struct {
					PendingPostings int64 `json:"pending_postings"`
				}
				if _, err := c.Do(ctx, http.MethodGet, "/v1/accounts/"+code, nil, &a, nil); err != nil {
					return err
				}
				if a.PendingPostings == 0 {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("the ledger did not drain within 5 minutes (%s: %d pending)", code, a.PendingPostings)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		return nil
	}

	// Each run waits for the ledger to apply what the run before it wrote
	// (the sweep picks non-urgent entries up within a minute), so neither
	// competes with applying the other's entries; --batch-first swaps the
	// order to show what is left of that effect.
	var singleRate, batchRate float64
	runSingle := func() error {
		if !o.single {
			return nil
		}
		if err := drain(); err != nil {
			return err
		}
		singleRate, err = benchSingleEntries(ctx, c, o, entry, stdout)
		return err
	}
	runBatch := func() error {
		if err := drain(); err != nil {
			return err
		}
		batchRate, err = benchBatchEntries(ctx, c, o, run, entry, stdout)
		return err
	}
	order := []func() error{runSingle, runBatch}
	if o.batchFirst {
		order = []func() error{runBatch, runSingle}
	}
	for _, f := range order {
		if err := f(); err != nil {
			return err
		}
	}
	if o.single {
		fmt.Fprintf(stdout, "ratio:  %.2f × single\n", batchRate/singleRate)
	}
	fmt.Fprintf(stdout, "peak RSS (server + load generator, one process): %s\n", bench.MiB(bench.PeakRSS()))
	return nil
}

// benchSingleEntries posts o.items entries through POST /v1/journal-entries
// from o.clients clients, each taking the next entry until all are posted,
// and returns entries per second.
func benchSingleEntries(ctx context.Context, c *bench.Client, o batchesBenchOpts, entry func(string, int) map[string]any, stdout io.Writer) (float64, error) {
	var (
		next, failed atomic.Int64
		lat          bench.Latencies
		wg           sync.WaitGroup
	)
	start := time.Now()
	for range o.clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= o.items {
					return
				}
				t0 := time.Now()
				st, err := c.Do(ctx, http.MethodPost, "/v1/journal-entries", entry("s", i), nil, nil)
				lat.Add(time.Since(t0))
				if err != nil || st != http.StatusCreated {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	single := time.Since(start)
	if failed.Load() > 0 {
		return 0, fmt.Errorf("single endpoint: %d of %d entries failed", failed.Load(), o.items)
	}
	singleRate := float64(o.items) / single.Seconds()
	fmt.Fprintf(stdout, "single: %d entries, %d clients: %s, %.0f items/s (request p50 %s, p99 %s)\n", o.items, o.clients,
		single.Round(time.Millisecond), singleRate, lat.Percentile(50).Round(time.Microsecond), lat.Percentile(99).Round(time.Microsecond))
	return singleRate, nil
}

// benchBatchEntries submits o.items entries as one batch, waits until it
// completes, and returns items per second (submission included).
func benchBatchEntries(ctx context.Context, c *bench.Client, o batchesBenchOpts, run string, entry func(string, int) map[string]any, stdout io.Writer) (float64, error) {
	// One batch of the same entries under other keys.
	items := make([]map[string]any, o.items)
	for i := range items {
		items[i] = entry("b", i)
	}
	var b struct {
		ID        int64  `json:"id"`
		Status    string `json:"status"`
		Succeeded int    `json:"succeeded"`
		Failed    int    `json:"failed"`
	}
	var prob bench.Problem
	start := time.Now()
	st, err := c.Do(ctx, http.MethodPost, "/v1/batches", map[string]any{"idempotency_key": "bench:" + run, "operation": "journal_entry", "items": items}, &b, &prob)
	if err != nil || st != http.StatusAccepted {
		return 0, fmt.Errorf("submit batch: status %d (%s): %v", st, prob.Code, err)
	}
	submit := time.Since(start)
	for b.Status == "RUNNING" {
		time.Sleep(10 * time.Millisecond)
		if _, err := c.Do(ctx, http.MethodGet, fmt.Sprintf("/v1/batches/%d", b.ID), nil, &b, nil); err != nil {
			return 0, err
		}
	}
	batched := time.Since(start)
	if b.Status != "COMPLETED" || b.Succeeded != o.items {
		return 0, fmt.Errorf("batch %d ended %s with %d succeeded, %d failed", b.ID, b.Status, b.Succeeded, b.Failed)
	}
	batchRate := float64(o.items) / batched.Seconds()
	fmt.Fprintf(stdout, "batch:  %d entries, one request: %s (submit %s), %.0f items/s\n", o.items, batched.Round(time.Millisecond), submit.Round(time.Millisecond), batchRate)
	return batchRate, nil
}
