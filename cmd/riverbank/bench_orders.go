package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"riverbank/internal/bench"
	"riverbank/internal/config"
)

func init() {
	benchScenarios["orders"] = benchScenario{
		summary: "N HTTP clients place orders over a catalogue (max load, then half load) and in a flash sale (one sku, stock S); vs pgbench tpcb-like",
		run:     runBenchOrders,
	}
}

type ordersBenchOpts struct {
	mode           string
	clients        int
	duration       time.Duration
	skus           int
	maxLines       int
	paymentTimeout time.Duration
	flashStock     int64
	halfLoad       bool
	pgbench        bool
	workers        int
	statements     bool
	readers        int
	// onCreated, when set, is told of every created order: its id, when
	// its request was sent and when the answer arrived (bench events).
	onCreated func(id int64, sent, answered time.Time)
	// serverProcess runs the catalogue's server as its own process.
	serverProcess bool
	// peakRSS, when set, receives the server process's peak RSS.
	peakRSS *int64
}

func runBenchOrders(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench orders", `Orders benchmark through the real HTTP API. The catalogue's server runs as
its own process by default (--server-process), so its CPU and peak RSS are
reported apart from the load generator's and Postgres's; the flash sale's
runs in this process.
  catalogue: --clients place orders of 1..--max-lines random lines over
             --skus products for --duration as fast as they can, then (with
             --half-load) again paced at half the rate reached. Nobody pays,
             so every order expires after --payment-timeout (by default
             after both phases, so expiries do not overlap the load phases
             but arrive at the rate orders were created). Prints orders/s
             created, create→CONFIRMED latency (confirmed_at − created_at of
             every order) per phase, and expiry lateness (cancelled_at −
             expires_at) over all orders.
  flash:     one sku with stock --flash-stock; every request is a new buyer
             asking for 1 unit, for --duration. Exactly S orders must
             succeed and every other request get 409 insufficient_stock;
             prints throughput and the stock proof (no oversell).
Then pgbench tpcb-like with the same client count and duration on the same
server, and the ratio of catalogue orders/s to its TPS. DATABASE_URL (or
--database-url) is required; it is migrated, and every run uses fresh skus
and buyer ids, so it can be re-run.`, stderr)
	loader := config.Register(fs, getenv, config.DatabaseOnly)
	var o ordersBenchOpts
	fs.StringVar(&o.mode, "mode", "all", "catalogue, flash or all")
	fs.IntVar(&o.clients, "clients", 8, "concurrent HTTP clients (and pgbench clients)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each load phase (and of pgbench)")
	fs.IntVar(&o.skus, "skus", 200, "catalogue size")
	fs.IntVar(&o.maxLines, "max-lines", 3, "lines per catalogue order: 1..max-lines")
	fs.DurationVar(&o.paymentTimeout, "payment-timeout", 0, "RIVERBANK_ORDER_PAYMENT_TIMEOUT of the catalogue server (0: 2 × duration + 10s, after both phases)")
	fs.Int64Var(&o.flashStock, "flash-stock", 100, "stock S of the flash-sale sku")
	fs.BoolVar(&o.halfLoad, "half-load", true, "catalogue: also run a phase paced at half the maximum rate")
	fs.BoolVar(&o.pgbench, "pgbench", true, "also run pgbench tpcb-like for the ratio")
	fs.IntVar(&o.workers, "workers", 0, "RIVERBANK_WORKERS of the server (0: the default)")
	fs.IntVar(&o.readers, "readers", 2, "catalogue: clients reading an order, a product and an account in turn during the half-load phase (0: none)")
	fs.BoolVar(&o.statements, "statements", true, "print the pg_stat_statements breakdown per order of the max phase (resets the server's statistics)")
	fs.BoolVar(&o.serverProcess, "server-process", true, "catalogue: run the server as its own process (`riverbank serve`), so its CPU and memory are reported apart from the load generator's; false runs it in this process")
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
	if o.paymentTimeout == 0 {
		o.paymentTimeout = 2*o.duration + 10*time.Second
	}
	if o.clients < 1 || o.duration <= 0 || o.skus < 1 || o.maxLines < 1 || o.maxLines > 100 || o.flashStock < 1 || o.paymentTimeout < time.Second {
		return errors.New("--clients, --duration, --skus, --flash-stock must be positive, --max-lines 1..100, --payment-timeout at least 1s")
	}
	if o.mode != "all" && o.mode != "catalogue" && o.mode != "flash" {
		return fmt.Errorf("unknown --mode %q (catalogue, flash or all)", o.mode)
	}
	fmt.Fprintf(stdout, "machine: %s\n", bench.Machine())
	var rate float64
	var serverRSS int64
	o.peakRSS = &serverRSS
	if o.mode != "flash" {
		if rate, err = benchOrdersCatalogue(ctx, cfg.DatabaseURL, o, stdout, stderr); err != nil {
			return err
		}
	}
	if o.mode != "catalogue" {
		if err := benchOrdersFlash(ctx, cfg.DatabaseURL, o, stdout, stderr); err != nil {
			return err
		}
	}
	if o.pgbench {
		tps, err := bench.Pgbench(ctx, cfg.DatabaseURL, o.clients, o.duration, "tpcb-like")
		if err != nil {
			return fmt.Errorf("pgbench: %w", err)
		}
		fmt.Fprintf(stdout, "pgbench tpcb-like, %d clients, %s: %.0f tps\n", o.clients, o.duration, tps)
		if rate > 0 {
			fmt.Fprintf(stdout, "ratio: catalogue orders/s = %.2f × pgbench tpcb-like tps (target ≥ 0.40)\n", rate/tps)
		}
	}
	if o.peakRSS == nil || *o.peakRSS == 0 {
		fmt.Fprintf(stdout, "peak RSS (server + load generator, one process): %s\n", bench.MiB(bench.PeakRSS()))
	}
	return nil
}

// benchOrder is the part of an order the bench reads.
type benchOrder struct {
	ID          int64      `json:"id"`
	Status      string     `json:"status"`
	CreatedAt   time.Time  `json:"created_at"`
	ExpiresAt   time.Time  `json:"expires_at"`
	ConfirmedAt *time.Time `json:"confirmed_at"`
	CancelledAt *time.Time `json:"cancelled_at"`
	Items       []struct {
		Quantity int64 `json:"quantity"`
	} `json:"items"`
}

type benchProduct struct {
	StockOnHand    int64 `json:"stock_on_hand"`
	StockReserved  int64 `json:"stock_reserved"`
	StockAvailable int64 `json:"stock_available"`
	Sold           int64 `json:"sold"`
}

// listBuyerOrders pages through every order of a buyer (optionally in one
// status) with the public list endpoint.
func listBuyerOrders(ctx context.Context, c *bench.Client, buyer, status string, max int) ([]benchOrder, error) {
	var out []benchOrder
	cursor := ""
	for {
		q := url.Values{"buyer_id": {buyer}, "limit": {"500"}}
		if status != "" {
			q.Set("status", status)
		}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page struct {
			Orders     []benchOrder `json:"orders"`
			NextCursor string       `json:"next_cursor"`
		}
		st, err := c.Do(ctx, http.MethodGet, "/v1/orders?"+q.Encode(), nil, &page, nil)
		if err != nil || st != http.StatusOK {
			return nil, fmt.Errorf("list orders of %s: status %d: %v", buyer, st, err)
		}
		out = append(out, page.Orders...)
		if page.NextCursor == "" || (max > 0 && len(out) >= max) {
			return out, nil
		}
		cursor = page.NextCursor
	}
}

// waitNoneIn polls until no order of the buyers is in one of statuses.
func waitNoneIn(ctx context.Context, c *bench.Client, buyers []string, statuses []string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		left := 0
		for _, b := range buyers {
			for _, s := range statuses {
				os, err := listBuyerOrders(ctx, c, b, s, 1)
				if err != nil {
					return err
				}
				left += len(os)
			}
		}
		if left == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("orders still %v after %s", statuses, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type phaseResult struct {
	name    string
	buyers  []string
	created int64
	failed  int64
	elapsed time.Duration
	request bench.Latencies
}

// runCataloguePhase has every client place orders for d; with rate > 0 the
// clients together are paced to rate orders/s.
func runCataloguePhase(ctx context.Context, c *bench.Client, name, run string, skus []string, o ordersBenchOpts, rate float64) *phaseResult {
	res := &phaseResult{name: name}
	for i := range o.clients {
		res.buyers = append(res.buyers, fmt.Sprintf("bench-%s-%s-%d", run, name, i))
	}
	var created, failed atomic.Int64
	start := time.Now()
	deadline := start.Add(o.duration)
	var wg sync.WaitGroup
	for i := range o.clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(start.UnixNano())))
			var interval time.Duration
			if rate > 0 {
				interval = time.Duration(float64(time.Second) * float64(o.clients) / rate)
			}
			next := time.Now().Add(time.Duration(rng.Int64N(int64(interval) + 1)))
			for n := 0; ; n++ {
				if interval > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(interval)
				}
				if !time.Now().Before(deadline) {
					return
				}
				lines := 1 + rng.IntN(o.maxLines)
				perm := rng.Perm(len(skus))[:lines]
				items := make([]map[string]any, lines)
				for j, p := range perm {
					items[j] = map[string]any{"sku": skus[p], "quantity": 1 + rng.IntN(3)}
				}
				body := map[string]any{"buyer_id": res.buyers[i], "merchant_id": "bench-shop", "identifier": fmt.Sprintf("o-%d", n), "items": items}
				t0 := time.Now()
				var prob bench.Problem
				var out benchOrder
				var dst any // nil unless the id is wanted: Do skips the body
				if o.onCreated != nil {
					dst = &out
				}
				st, err := c.Do(ctx, http.MethodPost, "/v1/orders", body, dst, &prob)
				t1 := time.Now()
				res.request.Add(t1.Sub(t0))
				if err != nil || st != http.StatusCreated {
					failed.Add(1)
					continue
				}
				created.Add(1)
				if o.onCreated != nil {
					o.onCreated(out.ID, t0, t1)
				}
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.created, res.failed = created.Load(), failed.Load()
	return res
}

func benchOrdersCatalogue(ctx context.Context, dsn string, o ordersBenchOpts, stdout, stderr io.Writer) (float64, error) {
	env := []string{"RIVERBANK_ORDER_PAYMENT_TIMEOUT=" + o.paymentTimeout.String()}
	if o.workers > 0 {
		env = append(env, "RIVERBANK_WORKERS="+strconv.Itoa(o.workers))
	}
	srv, err := bench.StartTarget(ctx, dsn, bench.TargetOptions{Process: o.serverProcess, Env: env, Log: stderr})
	if err != nil {
		return 0, err
	}
	defer srv.Stop() //nolint:errcheck
	defer func() {
		if srv.Separate() {
			fmt.Fprintf(stdout, "  peak RSS of the server process: %s (load generator: %s)\n", bench.MiB(srv.PeakRSS()), bench.MiB(bench.PeakRSS()))
			if o.peakRSS != nil {
				*o.peakRSS = srv.PeakRSS()
			}
		}
	}()
	c := bench.NewClientFor(o.clients, srv.Endpoint)
	run := time.Now().Format("150405.000")
	skus := make([]string, o.skus)
	for i := range skus {
		skus[i] = fmt.Sprintf("BENCH-%s-%d", run, i)
		st, err := c.Do(ctx, http.MethodPut, "/v1/products/"+skus[i], map[string]any{"name": skus[i], "price_minor": 100 + i, "currency": "CNY", "stock": 1_000_000_000}, nil, nil)
		if err != nil || st != http.StatusCreated {
			return 0, fmt.Errorf("create product %s: status %d: %v", skus[i], st, err)
		}
	}

	fmt.Fprintf(stdout, "catalogue: %d clients, %d skus, 1..%d lines per order, payment timeout %s\n", o.clients, o.skus, o.maxLines, o.paymentTimeout)
	stmts := statementsStart(ctx, o.statements, dsn, stdout)
	cpu0 := srv.CPU()
	phases := []*phaseResult{runCataloguePhase(ctx, c, "max", run, skus, o, 0)}
	cpu := srv.CPU().Sub(cpu0)
	maxRate := float64(phases[0].created) / phases[0].elapsed.Seconds()
	// CPU of the phase's creates and of the confirmations that ran during
	// it (not of the expiries, which come later).
	fmt.Fprintf(stdout, "  CPU per order created in the max phase: %s\n", cpu.PerOp(int(phases[0].created), srv.Separate()))
	if stmts {
		// Every order of the phase confirmed: create + confirm per order.
		if err := waitNoneIn(ctx, c, phases[0].buyers, []string{"CREATED"}, 5*time.Minute); err != nil {
			return 0, err
		}
		statementsPrint(ctx, stmts, dsn, stdout, "order", phases[0].created)
	}
	if o.halfLoad {
		// Reads under write load (SPEC §2: no cache in front of Postgres).
		account := "bench:read:" + run
		if st, err := c.Do(ctx, http.MethodPost, "/v1/accounts", map[string]string{"code": account, "name": account, "type": "ASSET", "currency": "CNY"}, nil, nil); err != nil || st != http.StatusCreated {
			return 0, fmt.Errorf("create account %s: status %d: %v", account, st, err)
		}
		var idsMu sync.Mutex
		var ids []int64
		half := o
		half.onCreated = func(id int64, _, _ time.Time) {
			idsMu.Lock()
			ids = append(ids, id)
			idsMu.Unlock()
		}
		rctx, stopReads := context.WithCancel(ctx)
		var reads [3]bench.Latencies
		var readErrs atomic.Int64
		var rwg sync.WaitGroup
		for r := range o.readers {
			rwg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(r), 7))
				for n := 0; rctx.Err() == nil; n++ {
					var path string
					switch n % 3 {
					case 0:
						idsMu.Lock()
						if len(ids) == 0 {
							idsMu.Unlock()
							time.Sleep(10 * time.Millisecond)
							continue
						}
						id := ids[rng.IntN(len(ids))]
						idsMu.Unlock()
						path = fmt.Sprintf("/v1/orders/%d", id)
					case 1:
						path = "/v1/products/" + skus[rng.IntN(len(skus))]
					case 2:
						path = "/v1/accounts/" + url.PathEscape(account)
					}
					t0 := time.Now()
					st, err := c.Do(rctx, http.MethodGet, path, nil, nil, nil)
					if rctx.Err() != nil {
						return
					}
					if err != nil || st != http.StatusOK {
						readErrs.Add(1)
						continue
					}
					reads[n%3].Add(time.Since(t0))
				}
			})
		}
		phases = append(phases, runCataloguePhase(ctx, c, "half", run, skus, half, maxRate/2))
		stopReads()
		rwg.Wait()
		if o.readers > 0 {
			for i, name := range []string{"GET /v1/orders/{id}", "GET /v1/products/{sku}", "GET /v1/accounts/{code}"} {
				fmt.Fprintf(stdout, "  reads at half write load, %-24s %6d reads: p50 %s, p99 %s (target p99 ≤ 10 ms)\n", name, reads[i].Count(),
					reads[i].Percentile(50).Round(time.Microsecond), reads[i].Percentile(99).Round(time.Microsecond))
			}
			if n := readErrs.Load(); n > 0 {
				return 0, fmt.Errorf("%d reads failed", n)
			}
		}
	}
	for _, p := range phases {
		fmt.Fprintf(stdout, "  phase %-4s: %d orders created in %s = %.0f orders/s (%d failed); request p50 %s, p99 %s\n",
			p.name, p.created, p.elapsed.Round(time.Millisecond), float64(p.created)/p.elapsed.Seconds(), p.failed,
			p.request.Percentile(50).Round(time.Microsecond), p.request.Percentile(99).Round(time.Microsecond))
	}

	var buyers []string
	for _, p := range phases {
		buyers = append(buyers, p.buyers...)
	}
	// Every order is confirmed by its job (or expired first), then expires.
	if err := waitNoneIn(ctx, c, buyers, []string{"CREATED", "CONFIRMED"}, o.paymentTimeout+2*time.Minute); err != nil {
		return 0, err
	}
	var lateness bench.Latencies
	var expiredUnconfirmed int
	var firstDue, lastCancel time.Time
	for _, p := range phases {
		var confirm bench.Latencies
		for _, b := range p.buyers {
			os, err := listBuyerOrders(ctx, c, b, "", 0)
			if err != nil {
				return 0, err
			}
			for _, od := range os {
				if od.ConfirmedAt != nil {
					confirm.Add(od.ConfirmedAt.Sub(od.CreatedAt))
				} else {
					expiredUnconfirmed++
				}
				if od.CancelledAt != nil {
					lateness.Add(od.CancelledAt.Sub(od.ExpiresAt))
					if firstDue.IsZero() || od.ExpiresAt.Before(firstDue) {
						firstDue = od.ExpiresAt
					}
					if od.CancelledAt.After(lastCancel) {
						lastCancel = *od.CancelledAt
					}
				}
			}
		}
		fmt.Fprintf(stdout, "  phase %-4s: create→CONFIRMED (confirmed_at − created_at, %d orders): p50 %s, p95 %s, p99 %s, max %s\n",
			p.name, confirm.Count(), confirm.Percentile(50).Round(time.Millisecond), confirm.Percentile(95).Round(time.Millisecond),
			confirm.Percentile(99).Round(time.Millisecond), confirm.Percentile(100).Round(time.Millisecond))
	}
	fmt.Fprintf(stdout, "  expiry lateness (cancelled_at − expires_at, %d orders): p50 %s, p99 %s, max %s; expired before confirmation: %d\n",
		lateness.Count(), lateness.Percentile(50).Round(time.Millisecond), lateness.Percentile(99).Round(time.Millisecond),
		lateness.Percentile(100).Round(time.Millisecond), expiredUnconfirmed)
	if span := lastCancel.Sub(firstDue); span > 0 {
		fmt.Fprintf(stdout, "  expiries: %d orders from the first expires_at to the last cancelled_at in %s = %.0f/s (they fell due at the rates they were created)\n",
			lateness.Count(), span.Round(time.Millisecond), float64(lateness.Count())/span.Seconds())
	}

	// Everything expired: all stock is back, nothing is held.
	var bad int
	for _, s := range skus {
		var p benchProduct
		if st, err := c.Do(ctx, http.MethodGet, "/v1/products/"+s, nil, &p, nil); err != nil || st != http.StatusOK {
			return 0, fmt.Errorf("get product %s: status %d: %v", s, st, err)
		}
		if p.StockOnHand != 1_000_000_000 || p.StockReserved != 0 || p.Sold != 0 {
			bad++
		}
	}
	fmt.Fprintf(stdout, "  stock after every order expired: %d of %d skus back to their initial on-hand with nothing reserved or sold\n", len(skus)-bad, len(skus))
	if bad > 0 {
		return 0, fmt.Errorf("%d skus did not get their stock back", bad)
	}
	return maxRate, nil
}

func benchOrdersFlash(ctx context.Context, dsn string, o ordersBenchOpts, stdout, stderr io.Writer) error {
	// Nothing may expire during the sale: a released unit would sell twice.
	srv, err := bench.StartServer(ctx, dsn, stderr, func(c *config.Config) {
		c.OrderPaymentTimeout = time.Hour
		if o.workers > 0 {
			c.Workers = o.workers
		}
	})
	if err != nil {
		return err
	}
	defer srv.Stop() //nolint:errcheck
	c := bench.NewClient(srv, o.clients)
	run := time.Now().Format("150405.000")
	sku := "FLASH-" + run
	if st, err := c.Do(ctx, http.MethodPut, "/v1/products/"+sku, map[string]any{"name": "flash sale", "price_minor": 9900, "currency": "CNY", "stock": o.flashStock}, nil, nil); err != nil || st != http.StatusCreated {
		return fmt.Errorf("create product %s: status %d: %v", sku, st, err)
	}

	var (
		won, soldOut, other atomic.Int64
		units               atomic.Int64
		lastWin             atomic.Int64 // ns since start
		lat                 bench.Latencies
		winners             sync.Map
	)
	start := time.Now()
	deadline := start.Add(o.duration)
	var wg sync.WaitGroup
	for i := range o.clients {
		wg.Go(func() {
			for n := 0; time.Now().Before(deadline); n++ {
				buyer := fmt.Sprintf("flash-%s-%d-%d", run, i, n)
				body := map[string]any{"buyer_id": buyer, "merchant_id": "bench-shop", "identifier": "sale", "items": []map[string]any{{"sku": sku, "quantity": 1}}}
				var od benchOrder
				var prob bench.Problem
				t0 := time.Now()
				st, err := c.Do(ctx, http.MethodPost, "/v1/orders", body, &od, &prob)
				lat.Add(time.Since(t0))
				switch {
				case err == nil && st == http.StatusCreated:
					won.Add(1)
					units.Add(od.Items[0].Quantity)
					winners.Store(od.ID, true)
					lastWin.Store(int64(time.Since(start)))
				case err == nil && st == http.StatusConflict && prob.Code == "insufficient_stock":
					soldOut.Add(1)
				default:
					other.Add(1)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	requests := won.Load() + soldOut.Load() + other.Load()

	// Let the confirmations finish, then read the stock.
	var p benchProduct
	deadlineConfirm := time.Now().Add(time.Minute)
	for {
		if st, err := c.Do(ctx, http.MethodGet, "/v1/products/"+sku, nil, &p, nil); err != nil || st != http.StatusOK {
			return fmt.Errorf("get product %s: status %d: %v", sku, st, err)
		}
		if p.StockReserved == 0 || time.Now().After(deadlineConfirm) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	distinct := 0
	winners.Range(func(any, any) bool { distinct++; return true })

	fmt.Fprintf(stdout, "flash sale: %d clients, one sku, stock S=%d, %s\n", o.clients, o.flashStock, o.duration)
	fmt.Fprintf(stdout, "  requests: %d (%.0f/s; p50 %s, p99 %s): %d created, %d insufficient_stock, %d other\n",
		requests, float64(requests)/elapsed.Seconds(), lat.Percentile(50).Round(time.Microsecond), lat.Percentile(99).Round(time.Microsecond),
		won.Load(), soldOut.Load(), other.Load())
	fmt.Fprintf(stdout, "  sold out after %s (last successful order)\n", time.Duration(lastWin.Load()).Round(time.Millisecond))
	fmt.Fprintf(stdout, "  stock after the sale: on_hand %d, reserved %d, sold %d, available %d; on_hand + sold = %d (S = %d)\n",
		p.StockOnHand, p.StockReserved, p.Sold, p.StockAvailable, p.StockOnHand+p.Sold, o.flashStock)
	ok := won.Load() == o.flashStock && int64(distinct) == o.flashStock && units.Load() == o.flashStock && other.Load() == 0 &&
		p.Sold+p.StockReserved == o.flashStock && p.StockOnHand+p.Sold == o.flashStock && p.StockAvailable == 0
	if !ok {
		return fmt.Errorf("flash sale invariant broken: %d orders created for stock %d (%d distinct, %d units, %d other errors)", won.Load(), o.flashStock, distinct, units.Load(), other.Load())
	}
	fmt.Fprintf(stdout, "  no oversell: exactly S orders created, every other request was insufficient_stock, sold + reserved = S\n")
	return nil
}
