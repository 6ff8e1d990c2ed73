package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"riverbank"
	"riverbank/internal/bench"
	"riverbank/internal/cob"
	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/domains"
	"riverbank/internal/ledger"
	"riverbank/internal/server"
	"riverbank/jobs"
)

func init() {
	benchScenarios["cob"] = benchScenario{
		summary: "close of business for N loans (seeded with COPY) by the real River workers, one or more dates across a month end; time, loans/s, WAL, growth, accrual history size",
		run:     runBenchCOB,
	}
}

// cobSeedOpts describe the portfolio a close-of-business bench seeds.
type cobSeedOpts struct {
	loans      int
	borrowers  int
	date       time.Time // the first business date the bench closes
	currencies []string
	// overdueEvery: the loans of every n-th borrower are due the day
	// before date, so they turn overdue on date (10: ~10% of the loans; 1:
	// all of them; 0: none).
	overdueEvery int
	lateFeeDay   int
}

// cobBenchOpts are the flags of `bench cob`.
type cobBenchOpts struct {
	seed       cobSeedOpts
	dates      int
	chunkSize  int
	workers    int
	checkpoint bool
	keep       bool
	template   bool
	yearSample int
	trace      bool
}

const cobBenchHelp = `Close-of-business benchmark, workers in this process.
A fresh database is created next to DATABASE_URL's (dropped afterwards
unless --keep), migrated, and seeded with COPY: --borrowers credit lines
(currencies rotated over --currencies), --loans loans over them (interest
modes DEALER / MANUFACTURER / SPLIT in turn, principals 10,000.00-500,000.00,
rates 4-15 %, penalty 10-30 %, late fees), all started in the month of
--date before it and carrying the accruals earlier runs would have made
(last_closed_date = --date - 1, a seeded COMPLETED run for that day). The
loans of --overdue-pct % of the borrowers are due the day before --date:
they turn overdue on --date, opening collection items and case.merge jobs.
The ledger gets the matching aggregated entries per currency (disbursement,
accrued interest) through the normal posting path, so the trial balance's
sub-ledger check holds.
Then the real River client (jobs.NewRegistration, RIVERBANK_WORKERS =
--workers, the cob queue gets max(2, workers/4)) closes --dates consecutive
dates starting at --date through COB.Start, one after the other. Per date:
wall time until the run is COMPLETED, until its trial balance is stored and
until every collection item is in a case; loans/s; chunk job durations;
CPU time of this process and of the Postgres backends serving it (on a
shared machine the CPU figure is the steadier one); peak RSS of this
process during the date (VmHWM, reset before each date); WAL written by the
cluster (pg_current_wal_lsn difference: other databases' traffic on a
shared server counts too); database growth; whether the trial balance
balanced. After a date that starts a month the size of loan_accrual_month
per loan-month is printed; finally 12 monthly rollovers of --year-sample
loans are written into a copy of that table, in rollover order, to measure
the accrual history per loan-year.`

func runBenchCOB(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench cob", cobBenchHelp, stderr)
	loader := config.Register(fs, getenv, config.DatabaseOnly)
	var o cobBenchOpts
	var date, currencies string
	var overduePct int
	fs.IntVar(&o.seed.loans, "loans", 1_000_000, "loans to seed")
	fs.IntVar(&o.seed.borrowers, "borrowers", 0, "borrowers (credit lines) the loans spread over (0: loans/4)")
	fs.StringVar(&date, "date", "2025-01-28", "first business date to close (day 3..28 of its month)")
	fs.IntVar(&overduePct, "overdue-pct", 10, "percent of the borrowers whose loans are due the day before --date (they turn overdue on it); 100/n is rounded to every n-th borrower")
	fs.IntVar(&o.dates, "dates", 5, "consecutive dates to close (the default crosses a month end)")
	fs.StringVar(&currencies, "currencies", "CNY,USD,EUR", "comma-separated currencies rotated over the borrowers")
	fs.IntVar(&o.chunkSize, "chunk-size", cob.DefaultChunkSize, "RIVERBANK_COB_CHUNK_SIZE: loan ids per chunk job")
	fs.IntVar(&o.workers, "workers", 20, "RIVERBANK_WORKERS (the cob queue gets max(2, workers/4))")
	fs.BoolVar(&o.checkpoint, "checkpoint", true, "CHECKPOINT before each date, as a daily run sees (every page's first change then writes a full-page image)")
	fs.BoolVar(&o.keep, "keep", false, "keep the bench database (its name is printed)")
	fs.BoolVar(&o.template, "template", false, "keep the seeded database as a template named after the seed and reuse it on the next run with the same seed and schema")
	fs.IntVar(&o.yearSample, "year-sample", 100_000, "loans in the accrual-history-per-year projection (0: skip)")
	fs.BoolVar(&o.trace, "trace", false, "print per date the statements that took longest (client-side time, all connections of this process)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of this process to this file")
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
	if o.seed.borrowers == 0 {
		o.seed.borrowers = max(1, o.seed.loans/4)
	}
	switch {
	case overduePct < 0 || overduePct > 100:
		return errors.New("--overdue-pct must be 0..100")
	case overduePct > 0:
		o.seed.overdueEvery = max(1, 100/overduePct)
	}
	o.seed.lateFeeDay = 20
	if err := parseSeedCommon(&o.seed, date, currencies); err != nil {
		return err
	}
	if o.dates < 1 || o.chunkSize < 1 || o.workers < 1 || o.yearSample < 0 {
		return errors.New("--dates, --chunk-size and --workers must be positive, --year-sample not negative")
	}
	if *cpuprofile != "" {
		stop, err := bench.StartCPUProfile(*cpuprofile)
		if err != nil {
			return err
		}
		defer stop()
	}
	fmt.Fprintf(stdout, "machine: %s; load average at start: %s\n", bench.Machine(), loadAverage())
	dsn, drop, err := cobBenchDatabase(ctx, cfg.DatabaseURL, "riverbank_bench_cob_", o.seed, o.template, o.keep, stdout)
	if err != nil {
		return err
	}
	defer drop()

	env, err := startCOBWorkers(ctx, dsn, o.workers, o.chunkSize, stderr)
	if err != nil {
		return err
	}
	defer env.stop()
	fmt.Fprintf(stdout, "workers: RIVERBANK_WORKERS=%d (cob queue %d, default queue %d), chunk size %d\n",
		o.workers, jobs.Queues(o.workers)[jobs.QueueCOB].MaxWorkers, o.workers, o.chunkSize)

	var results []*cobDateResult
	for i := range o.dates {
		d := o.seed.date.AddDate(0, 0, i)
		env.tracer.print(io.Discard, 0) // reset
		res, err := env.closeDate(ctx, d, o.checkpoint, 30*time.Minute)
		if err != nil {
			return fmt.Errorf("close %s: %w", d.Format(cob.DateLayout), err)
		}
		res.print(stdout)
		if o.trace {
			env.tracer.print(stdout, 25)
		}
		if d.Day() == 1 {
			if err := printAccrualMonthSize(ctx, env.q, stdout); err != nil {
				return err
			}
		}
		results = append(results, res)
	}
	if o.yearSample > 0 {
		if err := projectAccrualYear(ctx, env.pool, min(o.yearSample, o.seed.loans), stdout); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "\nsummary (%d loans, chunk %d, workers %d, load average now %s):\n", o.seed.loans, o.chunkSize, o.workers, loadAverage())
	for _, r := range results {
		fmt.Fprintf(stdout, "  %s  completed %6.1fs  trial balance %6.1fs  %8.0f loans/s  CPU %6.1fs  peak RSS %s  WAL %s  growth %s  balanced=%v\n",
			r.date.Format(cob.DateLayout), r.completed.Seconds(), r.trialBalance.Seconds(), r.loansPerSec(), (r.cpuBackends + r.cpuSelf).Seconds(),
			bench.MiB(r.peakRSS), bench.MiB(r.walBytes), bench.MiB(r.growth), r.balanced)
	}
	fmt.Fprintf(stdout, "peak RSS of this process over the whole bench (seeding included): %s\n", bench.MiB(bench.PeakRSS()))
	return nil
}

// parseSeedCommon checks and fills the seed options shared by bench cob and
// bench cases.
func parseSeedCommon(s *cobSeedOpts, date, currencies string) error {
	d, err := time.Parse(cob.DateLayout, date)
	if err != nil {
		return fmt.Errorf("--date %q is not a date (YYYY-MM-DD)", date)
	}
	if d.Day() < 3 || d.Day() > 28 {
		return errors.New("--date must be day 3..28 of its month (the seeded loans start in that month, before it)")
	}
	s.date = d
	for _, c := range strings.Split(currencies, ",") {
		if c = strings.TrimSpace(c); c != "" {
			s.currencies = append(s.currencies, c)
		}
	}
	if s.loans < 1 || s.borrowers < 1 || len(s.currencies) == 0 {
		return errors.New("--loans and --borrowers must be positive, --currencies not empty")
	}
	return nil
}

// loadAverage is /proc/loadavg's first three fields: these machines are
// shared, and a figure means little without the load it ran under.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// resetPeakRSS resets this process's VmHWM (Linux: writing 5 to
// /proc/self/clear_refs), so the next readPeakRSS covers only what follows.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// readPeakRSS is this process's VmHWM in bytes (since start or the last
// resetPeakRSS), falling back to getrusage's lifetime peak.
func readPeakRSS() int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return bench.PeakRSS()
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err == nil {
				return kb * 1024
			}
		}
	}
	return bench.PeakRSS()
}

// cpuTicks is the CPU time (user + system, in clock ticks of 1/100 s) of
// this process and of the Postgres backends connected to the bench
// database (same machine), so a figure can be judged on a shared machine
// whatever else runs: wall time on an idle machine is at least the total
// divided by the cores. Background processes (checkpointer, WAL writer,
// autovacuum) are not included.
func cpuTicks(ctx context.Context, pool *pgxpool.Pool) (self, backends int64, err error) {
	self = procTicks("self")
	rows, err := pool.Query(ctx, "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
	if err != nil {
		return 0, 0, err
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return 0, 0, err
	}
	for _, pid := range pids {
		backends += procTicks(strconv.Itoa(int(pid)))
	}
	return self, backends, nil
}

// procTicks reads utime + stime from /proc/<pid>/stat (0 when unreadable).
func procTicks(pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the command (which may contain spaces) in parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

// cobBenchDatabase creates the bench database next to adminDSN's and seeds
// it. With useTemplate the seeded database is first cloned from (or saved
// as) a template named after the seed options and the schema, so tuning
// runs skip the seeding. It returns the database's URL and a func that
// drops it (a no-op with keep).
func cobBenchDatabase(ctx context.Context, adminDSN, prefix string, s cobSeedOpts, useTemplate, keep bool, stdout io.Writer) (string, func(), error) {
	admin, err := pgx.Connect(ctx, adminDSN)
	if err != nil {
		return "", nil, fmt.Errorf("connect: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	name := prefix + time.Now().UTC().Format("20060102_150405")
	key := sha256.Sum256(fmt.Appendf(nil, "%d/%d/%s/%v/%d/%d\n%s", s.loans, s.borrowers, s.date.Format(cob.DateLayout), s.currencies, s.overdueEvery, s.lateFeeDay, riverbank.SchemaSQL))
	tpl := "riverbank_benchtpl_" + strings.TrimSuffix(strings.TrimPrefix(prefix, "riverbank_bench_"), "_") + "_" + hex.EncodeToString(key[:5])
	dbURL := func(n string) (string, error) {
		u, err := url.Parse(adminDSN)
		if err != nil {
			return "", fmt.Errorf("parse database URL: %w", err)
		}
		u.Path = "/" + n
		return u.String(), nil
	}
	dropDB := func(n string) {
		c, err := pgx.Connect(context.WithoutCancel(ctx), adminDSN)
		if err != nil {
			return
		}
		defer c.Close(context.WithoutCancel(ctx))
		_, _ = c.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+pgx.Identifier{n}.Sanitize()+" WITH (FORCE)")
	}
	drop := func() {
		if keep {
			fmt.Fprintf(stdout, "kept database %s\n", name)
			return
		}
		dropDB(name)
	}
	if useTemplate {
		var exists bool
		if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", tpl).Scan(&exists); err != nil {
			return "", nil, err
		}
		if exists {
			t0 := time.Now()
			if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{tpl}.Sanitize()+" STRATEGY FILE_COPY"); err != nil {
				return "", nil, fmt.Errorf("clone template %s: %w", tpl, err)
			}
			fmt.Fprintf(stdout, "database %s cloned from seeded template %s in %s\n", name, tpl, time.Since(t0).Round(time.Millisecond))
			u, err := dbURL(name)
			return u, drop, err
		}
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", nil, fmt.Errorf("create bench database: %w", err)
	}
	fmt.Fprintf(stdout, "database %s created\n", name)
	u, err := dbURL(name)
	if err != nil {
		dropDB(name)
		return "", nil, err
	}
	if err := seedCOB(ctx, u, s, stdout); err != nil {
		dropDB(name)
		return "", nil, err
	}
	if useTemplate {
		// The seeding connections are closed; a template needs none open.
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{tpl}.Sanitize()+" TEMPLATE "+pgx.Identifier{name}.Sanitize()+" STRATEGY FILE_COPY"); err != nil {
			fmt.Fprintf(stdout, "could not save template %s: %v\n", tpl, err)
		} else {
			fmt.Fprintf(stdout, "saved seeded template %s (drop it with: DROP DATABASE %s)\n", tpl, tpl)
		}
	}
	return u, drop, nil
}

// halfEven is round_half_even(n / d) for n >= 0, d > 0 (riverbank_div_half_even).
func halfEven(n, d int64) int64 {
	q, r := n/d, n%d
	switch {
	case 2*r > d:
		q++
	case 2*r == d:
		q += q % 2
	}
	return q
}

// mix64 is splitmix64: the seed is a pure function of the loan index, so
// two passes over the loans see the same portfolio without keeping it.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// seedLoan is one seeded loan with what earlier runs accrued on it.
type seedLoan struct {
	no, hash, borrower, currency, mode, dealer string
	manufacturer                               *string
	principal, lateFee, dInt, mInt             int64
	rate, penRate, share                       int32
	start, due                                 time.Time
}

var seedModes = []string{"DEALER", "MANUFACTURER", "SPLIT"}

func (s cobSeedOpts) borrowerID(b int) string { return fmt.Sprintf("B%08d", b) }

func (s cobSeedOpts) loan(i int) seedLoan {
	r := mix64(uint64(i) + 1)
	r2 := mix64(r)
	b := i % s.borrowers
	l := seedLoan{
		no:        fmt.Sprintf("L%09d", i),
		hash:      fmt.Sprintf("%016x%016x%016x%016x", r, r2, mix64(r2), mix64(r2+1)),
		borrower:  s.borrowerID(b),
		currency:  s.currencies[b%len(s.currencies)],
		mode:      seedModes[i%3],
		dealer:    fmt.Sprintf("D%04d", r%997),
		principal: 1_000_000 + int64(r%4_900_000)*10, // 10,000.00 .. 500,000.00
		rate:      int32(400 + (r>>20)%1100),         // 4 % .. 15 %
		penRate:   int32(1000 + (r>>32)%2000),        // 10 % .. 30 %
		lateFee:   int64(5_000 + (r>>40)%45_000),
	}
	if l.mode != "DEALER" {
		m := fmt.Sprintf("M%03d", (r>>8)%89)
		l.manufacturer = &m
	}
	if l.mode == "SPLIT" {
		l.share = int32(1000 + (r>>48)%8000)
	}
	first := time.Date(s.date.Year(), s.date.Month(), 1, 0, 0, 0, 0, time.UTC)
	overdue := s.overdueEvery > 0 && b%s.overdueEvery == 0
	span := s.date.Day() - 1 // start in [first, date-1]
	if overdue {
		span-- // start in [first, date-2], due date-1
	}
	l.start = first.AddDate(0, 0, int(r2%uint64(span)))
	if overdue {
		l.due = s.date.AddDate(0, 0, -1)
	} else {
		l.due = s.date.AddDate(0, 0, 30+int((r2>>16)%335))
	}
	// What the runs of start .. date-1 accrued (constant principal, no
	// repayments, never overdue before date): all in date's month.
	days := int64(s.date.Sub(l.start).Hours() / 24)
	i1 := halfEven(l.principal*int64(l.rate), 3_650_000)
	var m int64
	switch l.mode {
	case "MANUFACTURER":
		m = i1
	case "SPLIT":
		m = halfEven(i1*int64(l.share), 10_000)
	}
	l.dInt, l.mInt = days*(i1-m), days*m
	return l
}

// seedCOB seeds the portfolio into the (fresh) database at dsn.
func seedCOB(ctx context.Context, dsn string, s cobSeedOpts, stdout io.Writer) error {
	t0 := time.Now()
	pool, err := server.Connect(ctx, dsn, 4, 0, nil)
	if err != nil {
		return err
	}
	defer pool.Close()
	m, err := db.NewMigrator(pool)
	if err != nil {
		return err
	}
	if _, err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}

	// Pass 1: what each borrower borrowed and each currency's totals.
	used := make([]int64, s.borrowers)
	type totals struct{ principal, dInt, mInt int64 }
	byCur := map[string]*totals{}
	for _, c := range s.currencies {
		byCur[c] = &totals{}
	}
	for i := range s.loans {
		l := s.loan(i)
		b := i % s.borrowers
		used[b] += l.principal
		t := byCur[l.currency]
		t.principal += l.principal
		t.dInt += l.dInt
		t.mInt += l.mInt
	}

	// The ledger side, through the normal posting path (which creates the
	// currency's system accounts): per currency one disbursement entry and
	// one entry per interest kind accrued so far. The day before the first
	// date is a closed run.
	inserter, err := jobs.NewClient(pool, &config.Config{JobTimeout: time.Minute}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		return err
	}
	store := db.NewStore(pool, inserter)
	disbursement := map[string]int64{}
	err = store.InTx(ctx, func(tx *db.Tx) error {
		for _, c := range s.currencies {
			t := byCur[c]
			if t.principal == 0 {
				continue
			}
			post := func(kind, debit, credit string, amount int64) (int64, error) {
				if amount == 0 {
					return 0, nil
				}
				e, _, err := ledger.PostTx(ctx, tx, ledger.EntryInput{
					IdempotencyKey: "bench:seed:" + kind + ":" + c, Description: "bench seed: " + kind, Currency: c,
					Postings:             []ledger.PostingInput{{Account: debit, AmountMinor: amount}, {Account: credit, AmountMinor: -amount}},
					CreateSystemAccounts: true,
				})
				if err != nil {
					return 0, fmt.Errorf("post seed %s %s: %w", kind, c, err)
				}
				return e.ID, nil
			}
			id, err := post("disbursement", ledger.AccountLoansPrincipal, ledger.AccountPlatformCash, t.principal)
			if err != nil {
				return err
			}
			disbursement[c] = id
			if _, err := post("interest_dealer", ledger.AccountLoansInterestDealer, ledger.AccountIncomeInterest, t.dInt); err != nil {
				return err
			}
			if _, err := post("interest_manufacturer", ledger.AccountLoansInterestManufacturer, ledger.AccountIncomeInterest, t.mInt); err != nil {
				return err
			}
		}
		return tx.BenchCOBSeedClosedRun(ctx, db.BenchCOBSeedClosedRunParams{BusinessDate: s.date.AddDate(0, 0, -1), LateFeeDay: int32(s.lateFeeDay)})
	})
	if err != nil {
		return err
	}

	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	for _, typ := range []string{"loan_interest_mode", "loan_status"} {
		t, err := conn.Conn().LoadType(ctx, typ)
		if err != nil {
			return fmt.Errorf("load type %s: %w", typ, err)
		}
		conn.Conn().TypeMap().RegisterType(t)
	}
	b := 0
	n, err := conn.Conn().CopyFrom(ctx, pgx.Identifier{"credit_line"}, []string{"borrower_id", "currency", "limit_minor", "used_minor"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if b == s.borrowers {
				return nil, nil
			}
			row := []any{s.borrowerID(b), s.currencies[b%len(s.currencies)], used[b] + used[b]/2 + 100_000_000, used[b]}
			b++
			return row, nil
		}))
	if err != nil {
		return fmt.Errorf("copy credit lines: %w", err)
	}
	fmt.Fprintf(stdout, "seeded %d credit lines\n", n)

	lastClosed := s.date.AddDate(0, 0, -1)
	month := time.Date(s.date.Year(), s.date.Month(), 1, 0, 0, 0, 0, time.UTC)
	i := 0
	t1 := time.Now()
	n, err = conn.Conn().CopyFrom(ctx, pgx.Identifier{"loan"}, []string{
		"loan_no", "request_hash", "borrower_id", "currency", "principal_minor", "annual_rate_bps", "penalty_rate_bps",
		"late_fee_minor", "start_date", "due_date", "interest_mode", "dealer_id", "manufacturer_id", "manufacturer_share_bps",
		"principal_outstanding_minor", "interest_outstanding_dealer_minor", "interest_outstanding_manufacturer_minor",
		"last_closed_date", "acc_month", "month_interest_dealer_minor", "month_interest_manufacturer_minor",
		"interest_dealer_accrued_minor", "disbursement_entry_id",
	}, pgx.CopyFromFunc(func() ([]any, error) {
		if i == s.loans {
			return nil, nil
		}
		l := s.loan(i)
		i++
		return []any{
			l.no, l.hash, l.borrower, l.currency, l.principal, l.rate, l.penRate,
			l.lateFee, l.start, l.due, l.mode, l.dealer, l.manufacturer, l.share,
			l.principal, l.dInt, l.mInt,
			lastClosed, month, l.dInt, l.mInt,
			l.dInt, disbursement[l.currency],
		}, nil
	}))
	if err != nil {
		return fmt.Errorf("copy loans: %w", err)
	}
	fmt.Fprintf(stdout, "seeded %d loans with COPY in %s (%.0f rows/s)\n", n, time.Since(t1).Round(time.Millisecond), float64(n)/time.Since(t1).Seconds())
	// A portfolio that has lived for a while has been vacuumed: visibility
	// map set, statistics current.
	for _, stmt := range []string{"VACUUM (ANALYZE) loan", "VACUUM (ANALYZE) credit_line", "ANALYZE"} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
	}
	sz, err := db.New(conn).BenchCOBLoanTableSize(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "seeding done in %s: loan table %s + indexes %s (%.0f B/loan)\n", time.Since(t0).Round(time.Millisecond),
		bench.MiB(sz.HeapBytes), bench.MiB(sz.IndexBytes), float64(sz.HeapBytes+sz.IndexBytes)/float64(max(n, 1)))
	return nil
}

// cobEnv is the bench's worker process: the real domain services and the
// River client with every worker and periodic job registered.
type cobEnv struct {
	pool   *pgxpool.Pool
	q      *db.Queries
	svcs   *domains.Services
	client *river.Client[pgx.Tx]
	tracer *sqlTracer
	stop   func()
}

// sqlTracer adds up, per SQL text, how often and how long (client side:
// round trip, waits included) the bench process's queries ran: River's
// and the workers' alike. --trace prints the top of it.
type sqlTracer struct {
	mu    sync.Mutex
	stats map[string]*sqlStat
}

type sqlStat struct {
	calls int64
	total time.Duration
}

type sqlTraceKey struct{}

type sqlTraceStart struct {
	sql string
	at  time.Time
}

func (t *sqlTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, sqlTraceKey{}, sqlTraceStart{d.SQL, time.Now()})
}

func (t *sqlTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	st, ok := ctx.Value(sqlTraceKey{}).(sqlTraceStart)
	if !ok {
		return
	}
	d := time.Since(st.at)
	key := strings.Join(strings.Fields(st.sql), " ")
	if i := strings.Index(key, "-- name: "); i >= 0 {
		// sqlc queries start with their name
		key = key[i+9:]
	}
	if len(key) > 90 {
		key = key[:90]
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stats == nil {
		t.stats = map[string]*sqlStat{}
	}
	s := t.stats[key]
	if s == nil {
		s = &sqlStat{}
		t.stats[key] = s
	}
	s.calls++
	s.total += d
}

// print writes the n statements that took longest in total, and resets.
func (t *sqlTracer) print(w io.Writer, n int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	keys := make([]string, 0, len(t.stats))
	var all time.Duration
	for k, s := range t.stats {
		keys = append(keys, k)
		all += s.total
	}
	sort.Slice(keys, func(i, j int) bool { return t.stats[keys[i]].total > t.stats[keys[j]].total })
	fmt.Fprintf(w, "  statements by total client-side time (all connections, %.1f s in all):\n", all.Seconds())
	for _, k := range keys[:min(n, len(keys))] {
		s := t.stats[k]
		fmt.Fprintf(w, "    %8.2f s %7d calls %8.3f ms/call  %s\n", s.total.Seconds(), s.calls, float64(s.total.Microseconds())/1000/float64(s.calls), k)
	}
	t.stats = nil
}

func startCOBWorkers(ctx context.Context, dsn string, workers, chunkSize int, stderr io.Writer) (*cobEnv, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	loader := config.Register(fs, func(string) string { return "" }, config.All)
	if err := fs.Parse(nil); err != nil {
		return nil, err
	}
	cfg, err := loader.Load(fs)
	if err != nil {
		return nil, err
	}
	cfg.DatabaseURL = dsn
	cfg.Workers = workers
	cfg.COBChunkSize = chunkSize
	cfg.COBSchedule, cfg.COBScheduleParsed = "off", nil
	cfg.LogLevel = slog.LevelWarn
	logger := newLogger(stderr, slog.LevelWarn)
	conns := 10
	for _, q := range jobs.Queues(cfg.Workers) {
		conns += q.MaxWorkers
	}
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	pc.MaxConns = int32(conns)
	tracer := &sqlTracer{}
	pc.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	inserter, err := jobs.NewClient(pool, cfg, logger, nil)
	if err != nil {
		pool.Close()
		return nil, err
	}
	store := db.NewStore(pool, inserter)
	svcs := domains.New(cfg, logger, store)
	reg, err := jobs.NewRegistration(svcs)
	if err != nil {
		pool.Close()
		return nil, err
	}
	client, err := jobs.NewClient(pool, cfg, logger, reg)
	if err != nil {
		pool.Close()
		return nil, err
	}
	if err := client.Start(context.WithoutCancel(ctx)); err != nil {
		pool.Close()
		return nil, err
	}
	env := &cobEnv{pool: pool, q: store.Queries(), svcs: svcs, client: client, tracer: tracer}
	env.stop = func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = client.Stop(sctx)
		pool.Close()
	}
	return env, nil
}

// cobDateResult is what closing one date measured.
type cobDateResult struct {
	date                   time.Time
	loans                  int64
	chunks                 int32
	completed, dbCompleted time.Duration
	trialBalance           time.Duration
	attached               time.Duration // until no open item was unattached (0: none opened)
	itemsOpened, borrowers int64
	peakRSS                int64
	walBytes, growth       int64
	cpuSelf, cpuBackends   time.Duration // CPU time during the date (see cpuTicks)
	balanced               bool
	tb                     json.RawMessage
	chunkStats             db.BenchCOBChunkStatsRow
}

func (r *cobDateResult) loansPerSec() float64 { return float64(r.loans) / r.completed.Seconds() }

// closeDate starts the run for d through the COB service and waits for
// it to complete, for its trial balance, and for the case merges of the
// loans it found overdue.
func (e *cobEnv) closeDate(ctx context.Context, d time.Time, checkpoint bool, timeout time.Duration) (*cobDateResult, error) {
	if checkpoint {
		if _, err := e.pool.Exec(ctx, "CHECKPOINT"); err != nil {
			return nil, fmt.Errorf("checkpoint: %w", err)
		}
	}
	before, err := e.q.BenchCOBCounters(ctx)
	if err != nil {
		return nil, err
	}
	self0, back0, err := cpuTicks(ctx, e.pool)
	if err != nil {
		return nil, err
	}
	resetPeakRSS()
	res := &cobDateResult{date: d}
	t0 := time.Now()
	run, created, err := e.svcs.COB.Start(ctx, d)
	if err != nil {
		return nil, err
	}
	if !created {
		return nil, fmt.Errorf("the run for %s existed already", d.Format(cob.DateLayout))
	}
	res.chunks = run.ChunksTotal
	deadline := t0.Add(timeout)
	for res.trialBalance == 0 || (res.completed > 0 && res.attached == 0) {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("not done after %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
		r, err := e.q.GetCOBRun(ctx, d)
		if err != nil {
			return nil, err
		}
		if r.Status == db.CobRunStatusFAILED {
			return nil, fmt.Errorf("run FAILED: %d loans failed", r.LoansFailed)
		}
		if r.Status == db.CobRunStatusCOMPLETED && res.completed == 0 {
			res.completed = time.Since(t0)
			res.loans = r.LoansDone
			if r.CompletedAt != nil {
				res.dbCompleted = r.CompletedAt.Sub(r.StartedAt)
			}
		}
		if len(r.TrialBalance) > 0 && res.trialBalance == 0 {
			res.trialBalance = time.Since(t0)
			res.tb = r.TrialBalance
		}
		if res.completed > 0 && res.attached == 0 {
			left, err := e.q.BenchCOBMergesPending(ctx)
			if err == nil && !left {
				left, err = e.q.BenchCOBAnyUnattached(ctx)
			}
			if err != nil {
				return nil, err
			}
			if !left {
				res.attached = time.Since(t0)
			}
		}
	}
	res.peakRSS = readPeakRSS()
	self1, back1, err := cpuTicks(ctx, e.pool)
	if err != nil {
		return nil, err
	}
	res.cpuSelf, res.cpuBackends = time.Duration(self1-self0)*10*time.Millisecond, time.Duration(back1-back0)*10*time.Millisecond
	after, err := e.q.BenchCOBCounters(ctx)
	if err != nil {
		return nil, err
	}
	res.walBytes, res.growth = after.WalBytes-before.WalBytes, after.DbBytes-before.DbBytes
	var tb struct {
		Balanced bool `json:"balanced"`
	}
	if err := json.Unmarshal(res.tb, &tb); err != nil {
		return nil, fmt.Errorf("decode trial balance: %w", err)
	}
	res.balanced = tb.Balanced
	if res.chunkStats, err = e.q.BenchCOBChunkStats(ctx, d.Format(cob.DateLayout)); err != nil {
		return nil, err
	}
	items, err := e.q.BenchCOBItemsOpened(ctx, d)
	if err != nil {
		return nil, err
	}
	res.itemsOpened, res.borrowers = items.Items, items.Borrowers
	return res, nil
}

func (r *cobDateResult) print(w io.Writer) {
	fmt.Fprintf(w, "\n%s: %d loans in %d chunks (load average %s)\n", r.date.Format(cob.DateLayout), r.loans, r.chunks, loadAverage())
	fmt.Fprintf(w, "  COMPLETED after %.2f s (run row: %.2f s): %.0f loans/s\n", r.completed.Seconds(), r.dbCompleted.Seconds(), r.loansPerSec())
	fmt.Fprintf(w, "  trial balance stored after %.2f s: balanced=%v\n", r.trialBalance.Seconds(), r.balanced)
	if !r.balanced {
		var pretty bytes.Buffer
		_ = json.Indent(&pretty, r.tb, "    ", "  ")
		fmt.Fprintf(w, "    %s\n", pretty.String())
	}
	if r.itemsOpened > 0 {
		fmt.Fprintf(w, "  %d loans turned overdue (%d borrowers); every item in a case after %.2f s\n", r.itemsOpened, r.borrowers, r.attached.Seconds())
	}
	cs := r.chunkStats
	fmt.Fprintf(w, "  chunk jobs: p50 %.3f s, p95 %.3f s, max %.3f s; %.1f job-seconds over a %.2f s span (%.2f in flight on average); most attempts %d\n",
		cs.P50Seconds, cs.P95Seconds, cs.MaxSeconds, cs.BusySeconds, cs.SpanSeconds, cs.BusySeconds/max(cs.SpanSeconds, 1e-9), cs.MaxAttempt)
	fmt.Fprintf(w, "  CPU until the merges were done: Postgres backends %.1f s + this process %.1f s = %.1f s (%.1f s on %d idle cores at best)\n",
		r.cpuBackends.Seconds(), r.cpuSelf.Seconds(), (r.cpuBackends + r.cpuSelf).Seconds(), (r.cpuBackends+r.cpuSelf).Seconds()/float64(runtime.NumCPU()), runtime.NumCPU())
	fmt.Fprintf(w, "  peak RSS of this process during the date: %s\n", bench.MiB(r.peakRSS))
	fmt.Fprintf(w, "  WAL: %s (%.0f B/loan); database growth: %s\n", bench.MiB(r.walBytes), float64(r.walBytes)/float64(max(r.loans, 1)), bench.MiB(r.growth))
}

func printAccrualMonthSize(ctx context.Context, q *db.Queries, w io.Writer) error {
	sz, err := q.BenchCOBAccrualSize(ctx)
	if err != nil {
		return err
	}
	if sz.RowsTotal == 0 {
		return nil
	}
	per := float64(sz.TotalBytes) / float64(sz.RowsTotal)
	fmt.Fprintf(w, "  loan_accrual_month after the rollover: %d rows, heap %s + index %s = %.1f B per loan-month (×12 = %.0f B per loan-year with one month per loan in the index)\n",
		sz.RowsTotal, bench.MiB(sz.HeapBytes), bench.MiB(sz.IndexBytes), per, 12*per)
	return nil
}

// projectAccrualYear measures the accrual history of a loan-year: twelve
// monthly rollovers of n loans written into a copy of loan_accrual_month
// (same columns and index), month after month as close of business writes
// them, so the deduplicated index holds a posting list of 12 months per
// loan as it would after a year. The amounts come from the loans' current
// accruals (a month's interest is about 30 days of it). For comparison the
// same rows go into a variant that stores zero amounts as NULL (a NULL
// takes no space; most loans accrue no penalty, no late fee, and either no
// dealer or no manufacturer interest).
func projectAccrualYear(ctx context.Context, pool *pgxpool.Pool, n int, w io.Writer) error {
	t0 := time.Now()
	if _, err := pool.Exec(ctx, `DROP TABLE IF EXISTS bench_accrual_year, bench_accrual_year_nulls;
		CREATE TABLE bench_accrual_year (LIKE loan_accrual_month INCLUDING ALL);
		CREATE TABLE bench_accrual_year_nulls (
		    loan_id bigint NOT NULL, interest_dealer_minor bigint, interest_manufacturer_minor bigint,
		    penalty_minor bigint, late_fee_minor bigint, month date NOT NULL);
		CREATE INDEX ON bench_accrual_year_nulls (loan_id)`); err != nil {
		return err
	}
	defer pool.Exec(context.WithoutCancel(ctx), "DROP TABLE IF EXISTS bench_accrual_year, bench_accrual_year_nulls") //nolint:errcheck
	for m := range 12 {
		if _, err := pool.Exec(ctx, `WITH src AS (
			SELECT id, (coalesce(acc_month, date_trunc('month', start_date)::date) + make_interval(months => $2))::date AS month,
			       month_interest_dealer_minor * 30 / greatest(1, last_closed_date - start_date + 1) AS d,
			       month_interest_manufacturer_minor * 30 / greatest(1, last_closed_date - start_date + 1) AS m,
			       month_penalty_minor AS p, month_late_fee_minor AS f
			FROM loan WHERE id <= (SELECT min(id) FROM loan) + $1 - 1 ORDER BY id
		), a AS (
			INSERT INTO bench_accrual_year (loan_id, month, interest_dealer_minor, interest_manufacturer_minor, penalty_minor, late_fee_minor)
			SELECT id, month, d, m, p, f FROM src
		)
		INSERT INTO bench_accrual_year_nulls (loan_id, month, interest_dealer_minor, interest_manufacturer_minor, penalty_minor, late_fee_minor)
		SELECT id, month, nullif(d, 0), nullif(m, 0), nullif(p, 0), nullif(f, 0) FROM src`, n, m); err != nil {
			return fmt.Errorf("project month %d: %w", m, err)
		}
	}
	fmt.Fprintf(w, "\naccrual history per loan-year (%d loans × 12 monthly rollovers into a copy of loan_accrual_month, %s):\n", n, time.Since(t0).Round(time.Millisecond))
	for _, t := range []struct{ table, label string }{
		{"bench_accrual_year", "as stored (loan_accrual_month)"},
		{"bench_accrual_year_nulls", "variant: zero amounts as NULL"},
	} {
		var rows, heap, idx int64
		if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM `+t.table+`), pg_relation_size('`+t.table+`'), pg_indexes_size('`+t.table+`')`).Scan(&rows, &heap, &idx); err != nil {
			return err
		}
		loans := float64(rows) / 12
		fmt.Fprintf(w, "  %-32s heap %4.0f B + index %3.0f B = %4.0f B per loan-year (%.1f B per loan-month)\n",
			t.label+":", float64(heap)/loans, float64(idx)/loans, float64(heap+idx)/loans, float64(heap+idx)/float64(rows))
	}
	return nil
}
