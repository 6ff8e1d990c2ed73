package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"riverbank/internal/bench"
	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/events"
	"riverbank/internal/lending"
	"riverbank/internal/server"
)

func init() {
	benchScenarios["soak"] = benchScenario{
		summary: "every operation mixed at a steady rate for --duration (COB per simulated date, feed consumer, webhook): figures per interval, invariants checked in the database",
		run:     runBenchSoak,
	}
}

// soakOpts are the flags of bench soak.
type soakOpts struct {
	duration       time.Duration
	rate           float64
	calibrate      time.Duration
	clients        int
	interval       time.Duration
	cobEvery       time.Duration
	paymentTimeout time.Duration
	checkEvery     int
	drainTimeout   time.Duration
	skus           int
	accounts       int
	borrowers      int
	currencies     []string
	startDate      time.Time
	workers        int
	mix            []soakWeight
	webhooks       [][]string // event types per subscription (nil: all)
	keepDB         bool
}

// defaultSoakWebhooks are two subscriptions as two downstream systems
// would hold them: a lending system's and a fulfilment system's. One
// subscription is delivered one event at a time (its order is the feed's),
// so one subscription to everything could not keep up with the whole
// feed of a soak at its default rate on two cores (docs/benchmarks.md).
const defaultSoakWebhooks = "loan.,repayment.,credit_line.,case.,cob_run.;order.paid,order.shipped,order.completed,order.cancelled,product.stock_set,batch.completed"

// parseSoakWebhooks reads subscriptions separated by ';', each a comma list
// of event types, of prefixes ending in '.', or '*' for every type.
func parseSoakWebhooks(v string) ([][]string, error) {
	var subs [][]string
	for _, sub := range strings.Split(v, ";") {
		if sub = strings.TrimSpace(sub); sub == "" {
			continue
		}
		var types []string
		all := false
		for _, t := range strings.Split(sub, ",") {
			t = strings.TrimSpace(t)
			n := len(types)
			for _, known := range events.Types {
				if t == "*" || known == t || (strings.HasSuffix(t, ".") && strings.HasPrefix(known, t)) {
					types = append(types, known)
				}
			}
			all = all || t == "*"
			if len(types) == n && t != "" {
				return nil, fmt.Errorf("--webhooks: %q matches no event type (%s)", t, strings.Join(events.Types, ", "))
			}
		}
		if all {
			types = nil
		} else {
			slices.Sort(types)
			types = slices.Compact(types)
		}
		subs = append(subs, types)
	}
	return subs, nil
}

// Default mix: weights per operation out of 100. Orders dominate as in a
// shop; lending is a tenth of the requests but most of the database work
// per request; reads are a fifth.
var defaultSoakMix = []soakWeight{
	{skOrderCreate, 22}, {skOrderPay, 8}, {skOrderCancel, 3}, {skOrderShip, 5}, {skOrderReceive, 4},
	{skProductPut, 1},
	{skEntryUrgent, 8}, {skEntryPlain, 8}, {skAccountCreate, 1},
	{skLoanCreate, 7}, {skRepayDealer, 6}, {skRepayManufacturer, 2}, {skCreditLinePut, 1},
	{skBatch, 1},
	{skReadOrder, 8}, {skReadAccount, 6}, {skReadProduct, 6}, {skReadLoan, 3},
}

// soakWeight is one operation's share of the mix.
type soakWeight struct {
	kind   string
	weight int
}

func runBenchSoak(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench soak", `Soak test: every operation of the API mixed at a steady total rate for
--duration, against a server in this process and a fresh database, with the
asynchronous machinery running as in production. The mix (--mix kind=weight,
defaults below) covers product stock updates; orders created, paid, cancelled,
shipped and received, the rest left to expire after --payment-timeout;
accounts and journal entries, urgent and not; credit line changes, loans and
dealer and manufacturer repayments; small batches (journal entries, orders,
loans, in turn); and reads of orders, accounts, products and loans. Besides
the mix: close of business for one simulated business date every
--cob-every (PUT /v1/cob-runs/{date}; loans start and repayments are
value-dated on the open date, which moves one day per run, from
--start-date); one events feed consumer long-polling GET /v1/events; webhook
subscriptions (--webhooks) to a receiver in this process; a poller
following the batches.

Every --interval one line: requests/s in all (an operation is one request,
a repayment two: the loan's GET, counted as get.loan, then the POST) and
requests/s and p50/p99 per operation over the interval, tokens no client
was free to take (behind: the load is open-loop),
errors by operation, status and code (expected ones — insufficient_stock,
insufficient_credit, date_not_open racing a run, an order expiring under a
payment — apart from unexpected ones), feed consumer and webhooks' lag p99
(arrival − the event's occurred_at, which is its transaction's start), the
last close of business, River job counts (GET /v1/system/info), database
size, RSS of this process (server + load generator), the load average.

Every --check-every intervals, and at the end after the queues drained, the
invariants are checked against the database in one snapshot and printed
PASS/FAIL: trial balance, balances vs postings, stock (on_hand + sold moved
only by PUT, reserved = CREATED orders, sold = confirmed orders), orders
final after expiry, credit used = principal outstanding, collection cases,
close of business once per loan and date with balanced trial balances,
the feed consumer saw every event once in feed order and each webhook
subscription every event of its types, batches completed, no unexpected errors. A failed invariant makes
the command exit non-zero.

DATABASE_URL (or --database-url) names the Postgres server: a scratch
database is created there and dropped afterwards (--keep-db keeps it);
without it a throwaway private Postgres is started.`, stderr)
	loader := config.Register(fs, getenv, config.DatabaseOnly)
	var o soakOpts
	var currencies, startDate, mix, webhooks string
	fs.DurationVar(&o.duration, "duration", 10*time.Minute, "how long the load runs")
	fs.Float64Var(&o.rate, "rate", 0, "operations per second, all kinds together (the mix draws each one's kind); 0: half of what --calibrate measured")
	fs.DurationVar(&o.calibrate, "calibrate", time.Minute, "with --rate 0: run the mix flat out from --clients clients this long first, and soak at half the rate reached")
	fs.IntVar(&o.clients, "clients", 32, "concurrent HTTP clients carrying out the operations")
	fs.DurationVar(&o.interval, "interval", 30*time.Second, "reporting interval")
	fs.DurationVar(&o.cobEvery, "cob-every", time.Minute, "close one simulated business date this often")
	fs.DurationVar(&o.paymentTimeout, "payment-timeout", 30*time.Second, "RIVERBANK_ORDER_PAYMENT_TIMEOUT of the server: unpaid orders expire after it")
	fs.IntVar(&o.checkEvery, "check-every", 4, "check the invariants every N intervals during the load too (0: only at the end)")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 5*time.Minute, "how long to wait after the load for the queues to drain before the final check")
	fs.IntVar(&o.skus, "skus", 40, "products, spread over the currencies")
	fs.IntVar(&o.accounts, "accounts", 20, "ledger accounts per currency at the start (account.create adds more)")
	fs.IntVar(&o.borrowers, "borrowers", 40, "credit lines, spread over the currencies")
	fs.StringVar(&currencies, "currencies", "CNY,USD", "comma-separated currencies of products, accounts and credit lines")
	fs.StringVar(&startDate, "start-date", "", "first simulated business date, YYYY-MM-DD (default: early enough that every date closed is in the past, and the run crosses a month end)")
	fs.IntVar(&o.workers, "workers", 0, "RIVERBANK_WORKERS of the server (0: the default)")
	fs.StringVar(&mix, "mix", "", "weights to change, e.g. 'order.create=30,batch=0' (kinds: "+soakKindList()+")")
	fs.StringVar(&webhooks, "webhooks", defaultSoakWebhooks, "webhook subscriptions, ';'-separated, each a comma list of event types, prefixes ending in '.', or '*' (every type); empty: none")
	fs.BoolVar(&o.keepDB, "keep-db", false, "keep the scratch database (its name is printed)")
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
	if o.duration <= 0 || o.rate < 0 || (o.rate == 0 && o.calibrate <= 0) || o.clients < 1 || o.interval <= 0 || o.cobEvery <= 0 || o.paymentTimeout < time.Second ||
		o.checkEvery < 0 || o.drainTimeout <= 0 || len(o.currencies) == 0 || o.skus < len(o.currencies)*3 ||
		o.accounts < 3 || o.borrowers < len(o.currencies) {
		return errors.New("--duration, --clients, --interval, --cob-every, --drain-timeout must be positive, --rate not negative (0 needs --calibrate), --payment-timeout at least 1s, " +
			"--check-every not negative, --currencies not empty, --skus at least 3 per currency, --accounts at least 3, --borrowers at least one per currency")
	}
	if o.mix, err = parseSoakMix(mix); err != nil {
		return err
	}
	if o.webhooks, err = parseSoakWebhooks(webhooks); err != nil {
		return err
	}
	dates := int(o.duration/o.cobEvery) + 1
	today := time.Now().UTC().Truncate(24 * time.Hour)
	if startDate == "" {
		// The first of the month on or before the latest possible start,
		// then back half the dates: the month end falls mid-run, so the
		// accrual history's month rollover happens under load.
		latest := today.AddDate(0, 0, -dates-3)
		first := time.Date(latest.Year(), latest.Month(), 1, 0, 0, 0, 0, time.UTC)
		o.startDate = first.AddDate(0, 0, -(dates+1)/2)
	} else {
		if o.startDate, err = lending.ParseDate("start-date", startDate); err != nil {
			return err
		}
		if !o.startDate.AddDate(0, 0, dates+1).Before(today) {
			return fmt.Errorf("--start-date %s is too late: %d dates are closed during the run and each must be in the past", startDate, dates)
		}
	}

	logger := newLogger(stderr, slog.LevelWarn)
	dsn, cleanup, err := benchDatabase(ctx, cfg.DatabaseURL, logger, stdout)
	if err != nil {
		return err
	}
	defer cleanup()
	if cfg.DatabaseURL != "" {
		scratch, drop, err := createScratchDatabase(ctx, dsn, "riverbank_soak_")
		if err != nil {
			return err
		}
		if o.keepDB {
			defer fmt.Fprintf(stdout, "kept database %s\n", scratchName(scratch))
		} else {
			defer drop()
		}
		fmt.Fprintf(stdout, "scratch database: %s\n", scratchName(scratch))
		dsn = scratch
	}
	return soakRun(ctx, dsn, o, stdout, stderr)
}

func soakKindList() string {
	var ks []string
	for _, w := range defaultSoakMix {
		ks = append(ks, w.kind)
	}
	return strings.Join(ks, ", ")
}

// parseSoakMix applies "kind=weight,..." to the default mix.
func parseSoakMix(s string) ([]soakWeight, error) {
	mix := slices.Clone(defaultSoakMix)
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		w, err := strconv.Atoi(v)
		i := slices.IndexFunc(mix, func(x soakWeight) bool { return x.kind == k })
		if !ok || err != nil || w < 0 || i < 0 {
			return nil, fmt.Errorf("--mix: %q is not kind=weight with a known kind (%s) and a weight ≥ 0", part, soakKindList())
		}
		mix[i].weight = w
	}
	total := 0
	for _, w := range mix {
		total += w.weight
	}
	if total == 0 {
		return nil, errors.New("--mix: every weight is 0")
	}
	return mix, nil
}

func (s *soak) stats() *soakStats { return s.statsP.Load() }

// soak is one run of the soak test.
type soak struct {
	o      soakOpts
	c      *bench.Client
	pool   *pgxpool.Pool
	q      *db.Queries
	stdout io.Writer
	statsP atomic.Pointer[soakStats] // swapped once, after the calibration
	st     *soakState
	feed   *soakStream   // the events feed consumer
	hooks  []*soakStream // the webhook receiver, one per subscription
	start  time.Time

	cobMu   sync.Mutex
	cobLast string // the last close of business, for the interval line

	feedMu     sync.Mutex
	feedCursor string // where the consumer stopped, for the catch-up

	xactMu  sync.Mutex
	xactMax db.BenchSoakOldestXactsRow // the oldest xid-holding transaction seen this interval

	cpuSelf, cpuBackends int64 // CPU ticks at the last interval line

	lagThirds soakThirds // feed and webhook lags per third of the load

	intervals []soakInterval
	failures  []string // invariant checks that failed, mid-run or final
}

func soakRun(ctx context.Context, dsn string, o soakOpts, stdout, stderr io.Writer) error {
	s := &soak{o: o, stdout: stdout, feed: &soakStream{name: "feed consumer"}}
	s.statsP.Store(newSoakStats())
	for i, types := range o.webhooks {
		s.hooks = append(s.hooks, &soakStream{name: fmt.Sprintf("webhook %d", i+1), types: types})
	}
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	s.st = newSoakState("s"+hex.EncodeToString(suffix), o)

	// The receiver first: the subscription is created before anything
	// else, so it wants every event the run makes.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln) //nolint:errcheck
	defer hs.Close()

	key := make([]byte, 32)
	_, _ = rand.Read(key)
	srv, err := bench.StartServer(ctx, dsn, stderr, func(c *config.Config) {
		c.OrderPaymentTimeout = o.paymentTimeout
		c.WebhookAllowPrivate = true
		c.WebhookKeys = [][]byte{key}
		if o.workers > 0 {
			c.Workers = o.workers
		}
	})
	if err != nil {
		return err
	}
	defer srv.Stop() //nolint:errcheck
	if s.pool, err = server.Connect(ctx, dsn, 4, 0, nil); err != nil {
		return err
	}
	defer s.pool.Close()
	s.q = db.New(s.pool)
	s.c = bench.NewClient(srv, o.clients+8)

	autovacuum, _ := s.q.BenchSoakAutovacuum(ctx)
	fmt.Fprintf(stdout, "machine: %s, load average %.1f; Postgres autovacuum %s\n", bench.Machine(), bench.LoadAverage(), autovacuum)
	if err := s.setup(ctx, ln.Addr().String()); err != nil {
		return err
	}
	for _, h := range s.hooks {
		types := "every type"
		if h.types != nil {
			types = strings.Join(h.types, ", ")
		}
		fmt.Fprintf(stdout, "%s (subscription %d): %s\n", h.name, h.subID, types)
	}
	consumerCtx, stopConsumer := context.WithCancel(ctx)
	defer stopConsumer()
	var consumer sync.WaitGroup
	consumer.Go(func() { s.consume(consumerCtx) })
	// The batch poller follows batches until the load has ended and none
	// is left, or until the drain is over.
	xactCtx, stopWatching := context.WithCancel(ctx)
	defer stopWatching()
	go s.watchXacts(xactCtx)
	pollCtx, stopPolling := context.WithCancel(ctx)
	defer stopPolling()
	pollHard, stopPollingNow := context.WithCancel(ctx)
	defer stopPollingNow()
	var poller sync.WaitGroup
	poller.Go(func() { s.pollBatches(pollHard, pollCtx) })
	if o.rate == 0 {
		capacity := s.calibrateRate(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if capacity < 2 {
			return fmt.Errorf("calibration reached %.1f ops/s: too little to soak at half of it", capacity)
		}
		s.o.rate, o.rate = capacity/2, capacity/2
		// Let the queues the flat-out phase filled drain before the
		// soak's first interval.
		fmt.Fprintf(stdout, "settling for %s\n", o.interval)
		time.Sleep(o.interval)
		for _, st := range s.streams() {
			st.resetLag()
		}
	}
	var mix []string
	for _, w := range o.mix {
		if w.weight > 0 {
			mix = append(mix, fmt.Sprintf("%s %d", w.kind, w.weight))
		}
	}
	fmt.Fprintf(stdout, "soak: %s at %.0f ops/s from %d clients, mix %s; close of business every %s from %s; payment timeout %s; %d skus, %d accounts, %d credit lines in %s\n",
		o.duration, o.rate, o.clients, strings.Join(mix, ", "), o.cobEvery, o.startDate.Format(lending.DateLayout), o.paymentTimeout,
		o.skus, o.accounts*len(o.currencies), o.borrowers, strings.Join(o.currencies, "+"))

	// The load. Requests use ctx, so those in flight when loadCtx ends
	// finish and are counted.
	s.stats().take() // the first interval starts now
	s.cpuSelf, s.cpuBackends, _ = cpuTicks(ctx, s.pool)
	s.takeXact()
	s.start = time.Now()
	s.stats().thirds.begin(s.start, o.duration)
	s.lagThirds.begin(s.start, o.duration)
	loadCtx, stopLoad := context.WithTimeout(ctx, o.duration)
	defer stopLoad()
	var bg sync.WaitGroup
	bg.Go(func() { s.cobLoop(ctx, loadCtx) })
	tokens := make(chan struct{}, o.clients)
	bg.Go(func() { s.pace(loadCtx, tokens) })
	for i := range o.clients {
		bg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(i), uint64(s.start.UnixNano())))
			for range tokens {
				s.exec(ctx, s.pick(rng), rng)
			}
		})
	}
	ticker := time.NewTicker(o.interval)
	for n := 1; ; n++ {
		select {
		case <-ticker.C:
			s.report(ctx, n)
			continue
		case <-loadCtx.Done():
		}
		break
	}
	ticker.Stop()
	bg.Wait()
	stopPolling()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	// The tail of the load since the last line, unless it is a sliver (its
	// requests are in the totals either way).
	if s.stats().sinceTake() > o.interval/2 {
		s.report(ctx, len(s.intervals)+1)
	}

	drained := s.drain(ctx)
	stopPollingNow()
	poller.Wait()
	stopConsumer()
	consumer.Wait()
	if err := s.catchUp(ctx); err != nil {
		fmt.Fprintf(stdout, "feed consumer catch-up: %v\n", err)
	}
	s.summary()
	checks, err := s.checks(ctx, true)
	if err != nil {
		return err
	}
	s.printChecks(fmt.Sprintf("invariants (final, one snapshot after the load%s)", drained), checks)
	fmt.Fprintf(stdout, "peak RSS (server + load generator + receiver, one process): %s\n", bench.MiB(bench.PeakRSS()))
	if len(s.failures) > 0 {
		return fmt.Errorf("soak: %d invariant check(s) failed: %s", len(s.failures), strings.Join(s.failures, "; "))
	}
	fmt.Fprintln(stdout, "soak: every invariant held")
	return nil
}

// calibrateRate runs the mix flat out (each client starts its next
// operation as soon as its last one answered, no close of business) for
// --calibrate and returns the operations per second reached: what the box
// sustains with --clients clients. Unexpected errors count for the final
// check like the soak's own.
func (s *soak) calibrateRate(ctx context.Context) float64 {
	main := s.statsP.Swap(newSoakStats())
	calCtx, cancel := context.WithTimeout(ctx, s.o.calibrate)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	var done atomic.Int64
	for i := range s.o.clients {
		wg.Go(func() {
			rng := mrand.New(mrand.NewPCG(uint64(i), uint64(start.UnixNano())+1))
			for calCtx.Err() == nil {
				s.exec(ctx, s.pick(rng), rng)
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	cal := s.statsP.Swap(main)
	main.absorbSamples(cal.failureSamples())
	var requests int64
	var all bench.Histogram
	tot := cal.totals()
	for k, ks := range tot.kinds {
		if !soakDerived[k] {
			requests += ks.n
			all.Merge(&ks.lat)
		}
	}
	main.absorbUnexpected(tot.unexpected)
	rate := float64(done.Load()) / elapsed.Seconds()
	fmt.Fprintf(s.stdout, "calibration: the mix flat out from %d clients for %s: %.1f ops/s = %.1f requests/s (request p50 %s, p99 %s; errors: expected %s; unexpected %s); load average %.1f → soaking at %.1f ops/s\n",
		s.o.clients, elapsed.Round(time.Second), rate, float64(requests)/elapsed.Seconds(), fmtLat(all.Percentile(50)), fmtLat(all.Percentile(99)),
		fmtErrs(tot.expected), fmtErrs(tot.unexpected), bench.LoadAverage(), rate/2)
	return rate
}

// pace sends one token per operation at the configured rate until ctx
// ends, then closes tokens. A token no client is free to take is dropped
// and counted as behind: the load is open-loop, so a slow server shows as
// latency and drops, not as a lower request rate hidden in the averages.
func (s *soak) pace(ctx context.Context, tokens chan<- struct{}) {
	defer close(tokens)
	start := time.Now()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	var sent int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		due := int64(time.Since(start).Seconds() * s.o.rate)
		for ; sent < due; sent++ {
			select {
			case tokens <- struct{}{}:
			default:
				s.stats().behind()
			}
		}
	}
}

// pick draws an operation kind from the mix.
func (s *soak) pick(rng *mrand.Rand) string {
	total := 0
	for _, w := range s.o.mix {
		total += w.weight
	}
	n := rng.IntN(total)
	for _, w := range s.o.mix {
		if n < w.weight {
			return w.kind
		}
		n -= w.weight
	}
	return skOrderCreate
}

// soakInterval is what one interval line reported, kept for the summary.
type soakInterval struct {
	at       time.Duration
	reqPerS  float64
	p99      map[string]time.Duration
	feedLag  time.Duration
	hookLag  []time.Duration // per subscription
	oldest   float64         // seconds, the oldest xid-holding transaction seen
	cpuSelf  float64         // cores used by this process
	cpuPG    float64         // cores used by the Postgres backends of the database
	rss      int64
	heap     uint64
	routines int
	load     float64
	dbBytes  int64
	dead     int64 // dead row versions in the database's tables
}

// report prints one interval line (and, every --check-every intervals,
// the invariants).
func (s *soak) report(ctx context.Context, n int) {
	iv := s.stats().take()
	elapsed := time.Since(s.start)
	secs := iv.span.Seconds()
	rec := soakInterval{at: elapsed, p99: map[string]time.Duration{}}
	var b strings.Builder
	fmt.Fprintf(&b, "[%s]", fmtElapsed(elapsed))
	var ops int64
	var parts []string
	for _, k := range soakKinds {
		ks := iv.kinds[k]
		if ks == nil || ks.n == 0 {
			continue
		}
		if !soakDerived[k] {
			ops += ks.n
		}
		rec.p99[k] = ks.lat.Percentile(99)
		parts = append(parts, fmt.Sprintf("%s %.1f/s %s/%s", k, float64(ks.n)/secs, fmtLat(ks.lat.Percentile(50)), fmtLat(ks.lat.Percentile(99))))
	}
	rec.reqPerS = float64(ops) / secs
	fmt.Fprintf(&b, " %.1f req/s (behind %d) | %s", rec.reqPerS, iv.behind, strings.Join(parts, " · "))
	fmt.Fprintf(&b, " | errors: expected %s; unexpected %s", fmtErrs(iv.expected), fmtErrs(iv.unexpected))

	s.verifyStreams(ctx)
	fn, fl := s.feed.takeInterval()
	rec.feedLag = fl.Percentile(99)
	fmt.Fprintf(&b, " | feed %.0f ev/s lag p99 %s", float64(fn)/secs, fmtLat(rec.feedLag))
	for _, h := range s.hooks {
		hn, hl := h.takeInterval()
		rec.hookLag = append(rec.hookLag, hl.Percentile(99))
		fmt.Fprintf(&b, " | %s %.0f ev/s lag p99 %s", h.name, float64(hn)/secs, fmtLat(hl.Percentile(99)))
	}
	x := s.takeXact()
	rec.oldest = x.Seconds
	switch {
	case x.Seconds == 0:
		fmt.Fprintf(&b, " | oldest xid-holding transaction -")
	case x.Ours:
		fmt.Fprintf(&b, " | oldest xid-holding transaction %s (this database: %s)", fmtLat(time.Duration(x.Seconds*float64(time.Second))), x.Query)
	default:
		fmt.Fprintf(&b, " | oldest xid-holding transaction %s (database %s, %s: %s)", fmtLat(time.Duration(x.Seconds*float64(time.Second))), x.Datname, x.State, x.Query)
	}
	s.cobMu.Lock()
	fmt.Fprintf(&b, " | cob %s", s.cobLast)
	s.cobMu.Unlock()
	var info struct {
		JobsByState map[string]int64 `json:"jobs_by_state"`
	}
	if st, err := s.c.Do(ctx, http.MethodGet, "/v1/system/info", nil, &info, nil); err == nil && st == http.StatusOK {
		j := info.JobsByState
		fmt.Fprintf(&b, " | jobs available %d running %d retryable %d scheduled %d discarded %d", j["available"], j["running"], j["retryable"], j["scheduled"], j["discarded"])
	} else {
		fmt.Fprintf(&b, " | jobs ? (status %d: %v)", st, err)
	}
	if size, err := s.q.BenchSoakDatabaseSize(ctx); err == nil {
		rec.dbBytes = size
		fmt.Fprintf(&b, " | db %s", bench.MiB(size))
	}
	if dead, err := s.q.BenchSoakDeadTuples(ctx); err == nil && len(dead) > 0 {
		rec.dead = dead[0].Total
		var top []string
		for _, d := range dead {
			top = append(top, fmt.Sprintf("%s %d", d.Relname, d.Dead))
		}
		fmt.Fprintf(&b, " dead tuples %d (%s)", dead[0].Total, strings.Join(top, ", "))
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rec.rss, rec.heap, rec.routines, rec.load = bench.CurrentRSS(), ms.HeapInuse, runtime.NumGoroutine(), bench.LoadAverage()
	if self, backends, err := cpuTicks(ctx, s.pool); err == nil {
		rec.cpuSelf = max(float64(self-s.cpuSelf), 0) / 100 / secs
		rec.cpuPG = max(float64(backends-s.cpuBackends), 0) / 100 / secs
		s.cpuSelf, s.cpuBackends = self, backends
	}
	fmt.Fprintf(&b, " | rss %s heap %s %d goroutines | cpu %.2f + postgres %.2f cores | load %.1f", bench.MiB(rec.rss), bench.MiB(int64(rec.heap)), rec.routines,
		rec.cpuSelf, rec.cpuPG, rec.load)
	fmt.Fprintln(s.stdout, b.String())
	s.intervals = append(s.intervals, rec)

	if s.o.checkEvery > 0 && n%s.o.checkEvery == 0 {
		t0 := time.Now()
		checks, err := s.checks(ctx, false)
		if err != nil {
			fmt.Fprintf(s.stdout, "  invariant check failed to run: %v\n", err)
			return
		}
		s.printChecks(fmt.Sprintf("invariants at %s (under load: the ones that hold in any snapshot; %s)", fmtElapsed(elapsed), fmtLat(time.Since(t0))), checks)
	}
}

func fmtElapsed(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

// fmtLat prints a latency compactly: 0.8ms, 12ms, 1.24s.
func fmtLat(d time.Duration) string {
	switch {
	case d == 0:
		return "-"
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

func fmtErrs(m map[soakErrKey]int64) string {
	if len(m) == 0 {
		return "0"
	}
	keys := make([]soakErrKey, 0, len(m))
	var total int64
	for k, v := range m {
		keys = append(keys, k)
		total += v
	}
	slices.SortFunc(keys, func(a, b soakErrKey) int { return strings.Compare(a.String(), b.String()) })
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s ×%d", k, m[k])
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}

// summary prints the run's totals per operation and how the per-interval
// figures moved from the first third of the run to the last.
func (s *soak) summary() {
	w := s.stdout
	tot := s.stats().totals()
	fmt.Fprintf(w, "summary: %d intervals of %s; drift = p99 over the last third of the load ÷ p99 over the first third\n", len(s.intervals), s.o.interval)
	fmt.Fprintf(w, "  %-14s %9s %8s %8s %8s %8s  %s\n", "operation", "requests", "per s", "p50", "p99", "max", "p99 first third → last third, drift; worst interval p99")
	elapsed := s.o.duration.Seconds()
	for _, k := range soakKinds {
		ks := tot.kinds[k]
		if ks == nil || ks.n == 0 {
			continue
		}
		series := make([]time.Duration, 0, len(s.intervals))
		for _, iv := range s.intervals {
			if v, ok := iv.p99[k]; ok {
				series = append(series, v)
			}
		}
		first, last := s.stats().thirds.p99(k)
		fmt.Fprintf(w, "  %-14s %9d %8.1f %8s %8s %8s  %s → %s, %s; %s\n", k, ks.n, float64(ks.n)/elapsed,
			fmtLat(ks.lat.Percentile(50)), fmtLat(ks.lat.Percentile(99)), fmtLat(ks.lat.Max()), fmtLat(first), fmtLat(last), drift(first, last), fmtLat(maxOf(series)))
	}
	fmt.Fprintf(w, "  behind (tokens no client was free for): %d; errors: expected %s; unexpected %s\n", tot.behind, fmtErrs(tot.expected), fmtErrs(tot.unexpected))
	for _, d := range s.stats().failureSamples() {
		fmt.Fprintf(w, "    unexpected: %s\n", d)
	}
	var feed []time.Duration
	hook := make([][]time.Duration, len(s.hooks))
	var rss, heap, dbs, loads, cpu, oldest, dead []string
	for _, iv := range sample(s.intervals, 40) {
		dead = append(dead, fmt.Sprintf("%.0fk", float64(iv.dead)/1000))
		rss = append(rss, fmt.Sprintf("%.0f", float64(iv.rss)/(1<<20)))
		heap = append(heap, fmt.Sprintf("%.0f", float64(iv.heap)/(1<<20)))
		dbs = append(dbs, fmt.Sprintf("%.0f", float64(iv.dbBytes)/(1<<20)))
		loads = append(loads, fmt.Sprintf("%.1f", iv.load))
		cpu = append(cpu, fmt.Sprintf("%.2f+%.2f", iv.cpuSelf, iv.cpuPG))
		oldest = append(oldest, fmt.Sprintf("%.0f", iv.oldest))
	}
	for _, iv := range s.intervals {
		feed = append(feed, iv.feedLag)
		for i, l := range iv.hookLag {
			hook[i] = append(hook[i], l)
		}
	}
	type lagSeries struct {
		stream *soakStream
		series []time.Duration
	}
	lags := []lagSeries{{s.feed, feed}}
	for i, h := range s.hooks {
		lags = append(lags, lagSeries{h, hook[i]})
	}
	for _, l := range lags {
		first, last := s.lagThirds.p99(l.stream.name)
		total := &l.stream.lagTotal
		fmt.Fprintf(w, "  %s lag: p50 %s, p99 %s, max %s over the run; p99 first third → last third %s → %s, %s; worst interval p99 %s\n", l.stream.name,
			fmtLat(total.Percentile(50)), fmtLat(total.Percentile(99)), fmtLat(total.Max()), fmtLat(first), fmtLat(last), drift(first, last), fmtLat(maxOf(l.series)))
	}
	fmt.Fprintf(w, "  RSS by interval (MiB): %s\n", strings.Join(rss, " "))
	fmt.Fprintf(w, "  Go heap in use by interval (MiB): %s\n", strings.Join(heap, " "))
	fmt.Fprintf(w, "  database size by interval (MiB): %s\n", strings.Join(dbs, " "))
	fmt.Fprintf(w, "  dead row versions by interval: %s\n", strings.Join(dead, " "))
	fmt.Fprintf(w, "  CPU by interval (cores, this process + its Postgres backends): %s\n", strings.Join(cpu, " "))
	fmt.Fprintf(w, "  oldest xid-holding transaction on the server by interval (s): %s\n", strings.Join(oldest, " "))
	fmt.Fprintf(w, "  load average by interval: %s\n", strings.Join(loads, " "))
}

// watchXacts samples, every second until ctx ends, the oldest transaction
// on the server holding a transaction id, and keeps the interval's
// oldest: such a transaction, in any database, holds back the snapshot
// xmin and so the events feed (and the webhooks reading it).
func (s *soak) watchXacts(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		rows, err := s.q.BenchSoakOldestXacts(ctx)
		if err != nil || len(rows) == 0 {
			continue
		}
		s.xactMu.Lock()
		if rows[0].Seconds > s.xactMax.Seconds {
			s.xactMax = rows[0]
		}
		s.xactMu.Unlock()
	}
}

func (s *soak) takeXact() db.BenchSoakOldestXactsRow {
	s.xactMu.Lock()
	defer s.xactMu.Unlock()
	x := s.xactMax
	s.xactMax = db.BenchSoakOldestXactsRow{}
	return x
}

func drift(first, last time.Duration) string {
	if first == 0 || last == 0 {
		return "drift -"
	}
	return fmt.Sprintf("drift ×%.2f", float64(last)/float64(first))
}

func maxOf(xs []time.Duration) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	return slices.Max(xs)
}

// sample returns at most n evenly spaced elements of xs, the last included.
func sample[T any](xs []T, n int) []T {
	if len(xs) <= n {
		return xs
	}
	out := make([]T, 0, n)
	for i := range n {
		out = append(out, xs[(i+1)*len(xs)/n-1])
	}
	return out
}
