package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"riverbank/internal/bench"
	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/events"
	"riverbank/internal/server"
)

func init() {
	benchScenarios["webhooks"] = benchScenario{
		summary: "webhook deliveries/s and event-to-receiver latency to a local receiver",
		run:     runBenchWebhooks,
	}
}

type webhookBenchOpts struct {
	subscriptions int
	events        int
	batch         int
	trickle       int
	gap           time.Duration
	delay         time.Duration
	pgbench       bool
}

// webhookReceiver records when each (subscription, event) arrived.
type webhookReceiver struct {
	delay    time.Duration
	mu       sync.Mutex
	arrived  map[[2]int64]time.Time
	requests atomic.Int64
}

func (r *webhookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	now := time.Now()
	r.requests.Add(1)
	sub, _ := strconv.ParseInt(strings.TrimPrefix(req.URL.Path, "/s/"), 10, 64)
	ev, _ := strconv.ParseInt(req.Header.Get("Riverbank-Event-Id"), 10, 64)
	_, _ = io.Copy(io.Discard, req.Body)
	if r.delay > 0 {
		time.Sleep(r.delay)
	}
	r.mu.Lock()
	if _, dup := r.arrived[[2]int64{sub, ev}]; !dup {
		r.arrived[[2]int64{sub, ev}] = now
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *webhookReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.arrived)
}

func runBenchWebhooks(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench webhooks", `Webhook delivery benchmark, against a receiver on 127.0.0.1 in this process.
Creates --subscriptions subscriptions (every event type), then:
  trickle: appends --trickle single-event transactions --gap apart and
           reports the latency from each event's commit to its arrival at the
           receiver (the default dispatch interval, 2 s, dominates it);
  burst:   appends --events events in transactions of --batch and reports
           deliveries/s until every subscription has every event, and the
           same latency.
Prints pgbench -N with one client per subscription, on the same server right
after, for the ratio.`, stderr)
	loader := config.Register(fs, getenv, config.DatabaseOnly)
	var o webhookBenchOpts
	fs.IntVar(&o.subscriptions, "subscriptions", 4, "subscriptions (each delivered by its own job, one request in flight)")
	fs.IntVar(&o.events, "events", 5000, "events of the burst")
	fs.IntVar(&o.batch, "batch", 100, "events per appending transaction in the burst")
	fs.IntVar(&o.trickle, "trickle", 20, "single events of the latency phase")
	fs.DurationVar(&o.gap, "gap", 300*time.Millisecond, "pause between trickle events")
	fs.DurationVar(&o.delay, "receiver-delay", 0, "time the receiver takes to answer")
	fs.BoolVar(&o.pgbench, "pgbench", true, "also run pgbench -N for the ratio")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loader.Load(fs)
	if err != nil {
		return err
	}
	if o.subscriptions < 1 || o.events < 1 || o.batch < 1 || o.trickle < 0 {
		return fmt.Errorf("--subscriptions, --events and --batch must be positive")
	}
	logger := newLogger(stderr, slog.LevelWarn)
	dsn, cleanup, err := benchDatabase(ctx, cfg.DatabaseURL, logger, stdout)
	if err != nil {
		return err
	}
	defer cleanup()
	fmt.Fprintf(stdout, "machine: %s\n", bench.Machine())

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	srv, err := bench.StartServer(ctx, dsn, stderr, func(c *config.Config) {
		c.WebhookAllowPrivate = true
		c.WebhookKeys = [][]byte{key}
		c.Workers = max(c.Workers, o.subscriptions)
	})
	if err != nil {
		return err
	}
	defer srv.Stop() //nolint:errcheck

	recv := &webhookReceiver{delay: o.delay, arrived: map[[2]int64]time.Time{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: recv, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln) //nolint:errcheck
	defer hs.Close()

	c := bench.NewClient(srv, 4)
	subs := make([]int64, o.subscriptions)
	for i := range subs {
		var out struct {
			ID int64 `json:"id"`
		}
		st, err := c.Do(ctx, http.MethodPost, "/v1/webhook-subscriptions", map[string]any{"url": fmt.Sprintf("http://%s/s/%d", ln.Addr(), i)}, &out, nil)
		if err != nil || st != http.StatusCreated {
			return fmt.Errorf("create subscription: status %d: %v", st, err)
		}
		subs[i] = out.ID
	}
	// The subscriptions go when the benchmark ends: left behind, every later
	// benchmark on this database would pay for deliveries to a receiver that
	// is gone (found when a later `bench events` measured the feed's cost).
	defer func() {
		for _, id := range subs {
			if id == 0 {
				continue
			}
			if st, err := c.Do(context.WithoutCancel(ctx), http.MethodDelete, fmt.Sprintf("/v1/webhook-subscriptions/%d", id), nil, nil, nil); err != nil || st != http.StatusNoContent {
				fmt.Fprintf(stderr, "delete webhook subscription %d: status %d: %v\n", id, st, err)
			}
		}
	}()

	pool, err := server.Connect(ctx, dsn, 4, 0, nil)
	if err != nil {
		return err
	}
	defer pool.Close()
	store := db.NewStore(pool, nil)
	var committedMu sync.Mutex
	committed := map[int64]time.Time{}
	appendTx := func(n int) error {
		var ids []int64
		err := store.InTx(ctx, func(tx *db.Tx) error {
			data, err := events.Data(map[string]any{"bench": true})
			if err != nil {
				return err
			}
			for range n {
				row, err := tx.AppendEvent(ctx, db.AppendEventParams{Type: events.ProductStockSet, SubjectType: "product", SubjectID: "bench", Data: data})
				if err != nil {
					return err
				}
				ids = append(ids, row.ID)
			}
			return nil
		})
		now := time.Now()
		committedMu.Lock()
		for _, id := range ids {
			committed[id] = now
		}
		committedMu.Unlock()
		return err
	}
	wait := func(total int) (time.Duration, error) {
		start := time.Now()
		for recv.count() < total {
			if time.Since(start) > 10*time.Minute {
				return 0, fmt.Errorf("only %d of %d deliveries after 10 minutes", recv.count(), total)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return time.Since(start), nil
	}
	latencies := func(from int) *bench.Latencies {
		var lat bench.Latencies
		recv.mu.Lock()
		defer recv.mu.Unlock()
		committedMu.Lock()
		defer committedMu.Unlock()
		for k, at := range recv.arrived {
			if c, ok := committed[k[1]]; ok && k[1] >= int64(from) {
				lat.Add(at.Sub(c))
			}
		}
		return &lat
	}
	pct := func(l *bench.Latencies) string {
		return fmt.Sprintf("p50 %s, p99 %s, max %s", l.Percentile(50).Round(time.Millisecond), l.Percentile(99).Round(time.Millisecond), l.Percentile(100).Round(time.Millisecond))
	}

	fmt.Fprintf(stdout, "webhooks: %d subscriptions, receiver on %s (answer delay %s)\n", o.subscriptions, ln.Addr(), o.delay)
	if o.trickle > 0 {
		for range o.trickle {
			if err := appendTx(1); err != nil {
				return err
			}
			time.Sleep(o.gap)
		}
		if _, err := wait(o.trickle * o.subscriptions); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "  trickle: %d events, %s apart: commit → receiver %s\n", o.trickle, o.gap, pct(latencies(0)))
	}

	before := recv.count()
	var first int64
	committedMu.Lock()
	for id := range committed {
		first = max(first, id)
	}
	committedMu.Unlock()
	start := time.Now()
	for left := o.events; left > 0; left -= o.batch {
		if err := appendTx(min(left, o.batch)); err != nil {
			return err
		}
	}
	appended := time.Since(start)
	if _, err := wait(before + o.events*o.subscriptions); err != nil {
		return err
	}
	elapsed := time.Since(start)
	rate := float64(o.events*o.subscriptions) / elapsed.Seconds()
	fmt.Fprintf(stdout, "  burst: %d events appended in %s; %d deliveries in %s: %.0f deliveries/s (%.0f/s per subscription)\n",
		o.events, appended.Round(time.Millisecond), o.events*o.subscriptions, elapsed.Round(time.Millisecond), rate, rate/float64(o.subscriptions))
	fmt.Fprintf(stdout, "  burst latency commit → receiver: %s\n", pct(latencies(int(first)+1)))
	fmt.Fprintf(stdout, "  requests: %d (duplicates: %d)\n", recv.requests.Load(), recv.requests.Load()-int64(recv.count()))
	fmt.Fprintf(stdout, "  peak RSS (server + receiver + load, one process): %s\n", bench.MiB(bench.PeakRSS()))
	if o.pgbench {
		tps, err := bench.Pgbench(ctx, dsn, o.subscriptions, 10*time.Second, "simple-update")
		if err != nil {
			return fmt.Errorf("pgbench: %w", err)
		}
		fmt.Fprintf(stdout, "pgbench -N (simple update), %d clients, 10s: %.0f tps\n", o.subscriptions, tps)
		fmt.Fprintf(stdout, "ratio: %.2f × pgbench -N (one delivery = one POST + one write transaction)\n", rate/tps)
	}
	return nil
}
