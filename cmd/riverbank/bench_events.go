package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"riverbank/internal/bench"
	"riverbank/internal/config"
	"riverbank/internal/events"
)

func init() {
	benchScenarios["events"] = benchScenario{
		summary: "what the events feed costs order creation, consumer lag with long-poll under load, webhook deliveries/s",
		run:     runBenchEvents,
	}
}

type eventsBenchOpts struct {
	clients    int
	duration   time.Duration
	rounds     int
	skus       int
	consumers  int
	webhooks   bool
	pgbench    bool
	statements bool
}

func runBenchEvents(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench events", `Events feed benchmark, server in this process.
  cost:  --clients place catalogue orders as fast as they can for --duration,
         alternately with the feed on and off (every event append skipped:
         a switch only this benchmark has), --rounds times each, waiting for
         every order's confirmation job between phases. Prints orders/s of
         each phase and the feed's cost (1 − on/off, target ≤ 10%).
  lag:   --consumers follow GET /v1/events with wait=10s from the feed's end
         while the clients place orders at full, then half, load. For every
         (consumer, order.created event) prints the lag from the creating
         request's answer (a lower bound of commit → consumer) and from its
         sending (an upper bound): p50/p99 (target p99 ≤ 200 ms).
  webhooks (--webhooks): the burst of 'riverbank bench webhooks' (4
         subscriptions, 5,000 events): deliveries/s (target ≥ 500/s).
Then pgbench tpcb-like with the same client count on the same server.`, stderr)
	loader := config.Register(fs, getenv, config.DatabaseOnly)
	var o eventsBenchOpts
	fs.IntVar(&o.clients, "clients", 16, "concurrent HTTP clients placing orders (and pgbench clients)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each load phase")
	fs.IntVar(&o.rounds, "rounds", 2, "cost: phases with the feed on and off, each")
	fs.IntVar(&o.skus, "skus", 200, "catalogue size")
	fs.IntVar(&o.consumers, "consumers", 4, "lag: concurrent feed consumers")
	fs.BoolVar(&o.webhooks, "webhooks", true, "also measure webhook deliveries/s")
	fs.BoolVar(&o.pgbench, "pgbench", true, "also run pgbench tpcb-like for the ratio")
	fs.BoolVar(&o.statements, "statements", true, "print the pg_stat_statements breakdown per order of the last round's phases (resets the server's statistics)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loader.Load(fs)
	if err != nil {
		return err
	}
	if o.clients < 1 || o.duration <= 0 || o.rounds < 1 || o.skus < 1 || o.consumers < 1 {
		return errors.New("--clients, --duration, --rounds, --skus and --consumers must be positive")
	}
	logger := newLogger(stderr, slog.LevelWarn)
	dsn, cleanup, err := benchDatabase(ctx, cfg.DatabaseURL, logger, stdout)
	if err != nil {
		return err
	}
	defer cleanup()
	fmt.Fprintf(stdout, "machine: %s\n", bench.Machine())

	// No order may expire during the run: expiry jobs would add work the
	// phases do not control.
	srv, err := bench.StartServer(ctx, dsn, stderr, func(c *config.Config) { c.OrderPaymentTimeout = 24 * time.Hour })
	if err != nil {
		return err
	}
	defer srv.Stop() //nolint:errcheck
	c := bench.NewClient(srv, o.clients+o.consumers)
	run := time.Now().Format("150405.000")
	skus := make([]string, o.skus)
	for i := range skus {
		skus[i] = fmt.Sprintf("EVBENCH-%s-%d", run, i)
		st, err := c.Do(ctx, http.MethodPut, "/v1/products/"+skus[i], map[string]any{"name": skus[i], "price_minor": 100 + i, "currency": "CNY", "stock": 1_000_000_000}, nil, nil)
		if err != nil || st != http.StatusCreated {
			return fmt.Errorf("create product %s: status %d: %v", skus[i], st, err)
		}
	}
	oo := ordersBenchOpts{clients: o.clients, duration: o.duration, maxLines: 3}

	// Cost: alternate on/off so drift of a shared machine hits both alike.
	fmt.Fprintf(stdout, "cost: %d clients, %s phases, feed on and off alternately, %d rounds\n", o.clients, o.duration, o.rounds)
	var on, off []float64
	for r := range o.rounds {
		order := []bool{true, false}
		if r%2 == 1 {
			order = []bool{false, true}
		}
		for _, feed := range order {
			name := fmt.Sprintf("r%d-%s", r, map[bool]string{true: "on", false: "off"}[feed])
			stmts := statementsStart(ctx, o.statements && r == o.rounds-1, dsn, stdout)
			events.DisableAppendsForBenchmark(!feed)
			p := runCataloguePhase(ctx, c, name, run, skus, oo, 0)
			// Confirmations of this phase's orders run (and append, or not)
			// before the next phase starts.
			err := waitNoneIn(ctx, c, p.buyers, []string{"CREATED"}, 5*time.Minute)
			events.DisableAppendsForBenchmark(false)
			if err != nil {
				return err
			}
			rate := float64(p.created) / p.elapsed.Seconds()
			fmt.Fprintf(stdout, "  %-7s: %6d orders in %s = %5.0f orders/s (%d failed), request p50 %s, p99 %s\n",
				name, p.created, p.elapsed.Round(time.Millisecond), rate, p.failed,
				p.request.Percentile(50).Round(time.Microsecond), p.request.Percentile(99).Round(time.Microsecond))
			statementsPrint(ctx, stmts, dsn, stdout, "order", p.created)
			if feed {
				on = append(on, rate)
			} else {
				off = append(off, rate)
			}
		}
	}
	onRate, offRate := mean(on), mean(off)
	fmt.Fprintf(stdout, "  feed on %.0f orders/s, off %.0f orders/s: the feed costs %.1f%% of order-create throughput (target ≤ 10%%)\n",
		onRate, offRate, 100*(1-onRate/offRate))

	// Lag at full, then half, load.
	for _, phase := range []struct {
		name string
		rate float64
	}{{"full", 0}, {"half", onRate / 2}} {
		fromAnswer, fromSend, seen, err := measureFeedLag(ctx, c, o, oo, run, skus, phase.name, phase.rate)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "lag, %s load, %d consumers, %d events seen: from answer p50 %s, p99 %s, max %s; from send p50 %s, p99 %s (target p99 ≤ 200 ms)\n",
			phase.name, o.consumers, seen,
			fromAnswer.Percentile(50).Round(time.Millisecond), fromAnswer.Percentile(99).Round(time.Millisecond), fromAnswer.Percentile(100).Round(time.Millisecond),
			fromSend.Percentile(50).Round(time.Millisecond), fromSend.Percentile(99).Round(time.Millisecond))
	}
	fmt.Fprintf(stdout, "peak RSS (server + load generator, one process): %s\n", bench.MiB(bench.PeakRSS()))
	if err := srv.Stop(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}

	if o.webhooks {
		fmt.Fprintln(stdout, "webhooks (bench webhooks --trickle 0):")
		if err := runBenchWebhooks(ctx, []string{"--database-url", dsn, "--trickle", "0", "--pgbench=false"}, getenv, stdout, stderr); err != nil {
			return err
		}
	}
	if o.pgbench {
		tps, err := bench.Pgbench(ctx, dsn, o.clients, o.duration, "tpcb-like")
		if err != nil {
			return fmt.Errorf("pgbench: %w", err)
		}
		fmt.Fprintf(stdout, "pgbench tpcb-like, %d clients, %s: %.0f tps; orders/s feed on = %.2f ×, feed off = %.2f × pgbench\n",
			o.clients, o.duration, tps, onRate/tps, offRate/tps)
	}
	return nil
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(max(len(xs), 1))
}

// measureFeedLag places orders for one phase while o.consumers follow the
// feed with long-poll, and returns, per consumer and order.created event,
// the time from the creating request's answer and from its sending to the
// consumer's receipt of the page holding it.
func measureFeedLag(ctx context.Context, c *bench.Client, o eventsBenchOpts, oo ordersBenchOpts, run string, skus []string, name string, rate float64) (fromAnswer, fromSend *bench.Latencies, seen int, err error) {
	type times struct{ sent, answered time.Time }
	var mu sync.Mutex
	created := map[string]times{}
	received := make([]map[string]time.Time, o.consumers) // consumer i writes only received[i]
	var got atomic.Int64                                  // order.created events received, all consumers

	// Every consumer starts at the feed's current end.
	start, err := feedEnd(ctx, c)
	if err != nil {
		return nil, nil, 0, err
	}
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	errs := make(chan error, o.consumers)
	for i := range o.consumers {
		received[i] = map[string]time.Time{}
		wg.Go(func() {
			cursor := start
			for cctx.Err() == nil {
				page, err := readEvents(cctx, c, cursor, "10s")
				if err != nil {
					if cctx.Err() == nil {
						errs <- err
					}
					return
				}
				now := time.Now()
				for _, e := range page.Events {
					if e.Type == events.OrderCreated {
						if _, dup := received[i][e.SubjectID]; !dup {
							received[i][e.SubjectID] = now
							got.Add(1)
						}
					}
				}
				cursor = page.NextCursor
			}
		})
	}
	oo.onCreated = func(id int64, sent, answered time.Time) {
		mu.Lock()
		created[strconv.FormatInt(id, 10)] = times{sent, answered}
		mu.Unlock()
	}
	p := runCataloguePhase(ctx, c, "lag-"+name, run, skus, oo, rate)
	// Let the consumers catch up with the last orders, then stop them.
	mu.Lock()
	want := int64(len(created) * o.consumers)
	mu.Unlock()
	for deadline := time.Now().Add(30 * time.Second); got.Load() < want && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	wg.Wait()
	select {
	case err := <-errs:
		return nil, nil, 0, err
	default:
	}
	if err := waitNoneIn(ctx, c, p.buyers, []string{"CREATED"}, 5*time.Minute); err != nil {
		return nil, nil, 0, err
	}
	fromAnswer, fromSend = &bench.Latencies{}, &bench.Latencies{}
	for _, r := range received {
		for id, at := range r {
			t, ok := created[id]
			if !ok {
				continue
			}
			seen++
			fromAnswer.Add(max(at.Sub(t.answered), 0))
			fromSend.Add(at.Sub(t.sent))
		}
	}
	if want := len(created) * o.consumers; seen != want {
		return nil, nil, 0, fmt.Errorf("lag %s: consumers saw %d order.created events, want %d (%d orders × %d consumers)", name, seen, want, len(created), o.consumers)
	}
	return fromAnswer, fromSend, seen, nil
}

type eventsPage struct {
	Events []struct {
		Type      string `json:"type"`
		SubjectID string `json:"subject_id"`
	} `json:"events"`
	NextCursor string `json:"next_cursor"`
}

func readEvents(ctx context.Context, c *bench.Client, after, wait string) (*eventsPage, error) {
	q := url.Values{"limit": {"500"}}
	if after != "" {
		q.Set("after", after)
	}
	if wait != "" {
		q.Set("wait", wait)
	}
	var page eventsPage
	st, err := c.Do(ctx, http.MethodGet, "/v1/events?"+q.Encode(), nil, &page, nil)
	if err != nil {
		return nil, err
	}
	if st != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/events: status %d", st)
	}
	return &page, nil
}

// feedEnd pages to the end of the feed and returns the cursor there.
func feedEnd(ctx context.Context, c *bench.Client) (string, error) {
	cursor := ""
	for {
		page, err := readEvents(ctx, c, cursor, "")
		if err != nil {
			return "", err
		}
		if page.NextCursor != "" {
			cursor = page.NextCursor
		}
		if len(page.Events) == 0 {
			return cursor, nil
		}
	}
}
