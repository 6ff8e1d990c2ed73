package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"riverbank/internal/bench"
	"riverbank/internal/cob"
	"riverbank/internal/collection"
	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/jobs"
)

func init() {
	benchScenarios["cases"] = benchScenario{
		summary: "N loans of K borrowers all turn overdue at once (one close-of-business date, or --mode direct); time until every item is in its borrower's one OPEN case",
		run:     runBenchCases,
	}
}

const casesBenchHelp = `Collection-case merge benchmark, workers in this process.
A fresh database is seeded like bench cob (COPY; see 'riverbank bench cob
--help'), except that every loan is due the day before --date, so all of
them turn overdue on --date at once.
  --mode cob:    close --date through COB.Start: the chunk transactions turn
                 the loans OVERDUE, insert their collection items and request
                 case.merge per borrower (signal row + job) as in production;
                 the case.merge workers (default queue, RIVERBANK_WORKERS)
                 run alongside the remaining chunks.
  --mode direct: isolate the merging: one transaction marks every loan
                 OVERDUE, inserts its collection item and requests the merges
                 (collection.RequestMergesTx, the function the chunks call),
                 then only case.merge jobs run.
Prints the time from the start until no open collection item is without a
case (and, in cob mode, until the run COMPLETED), merges/s, peak RSS, and
checks the invariants: no borrower has two OPEN cases, every borrower with
an overdue loan has exactly one OPEN case, every overdue loan has one open
item, in its own borrower's OPEN case.`

func runBenchCases(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench cases", casesBenchHelp, stderr)
	loader := config.Register(fs, getenv, config.DatabaseOnly)
	var (
		s                cobSeedOpts
		date, currencies string
		mode             string
		chunkSize        int
		workers          int
		keep, template   bool
		trace            bool
		timeout          time.Duration
	)
	fs.IntVar(&s.loans, "loans", 100_000, "loans to seed (all turn overdue)")
	fs.IntVar(&s.borrowers, "borrowers", 25_000, "borrowers the loans spread over")
	fs.StringVar(&date, "date", "2025-01-28", "the business date on which every loan turns overdue (day 3..28)")
	fs.StringVar(&currencies, "currencies", "CNY,USD,EUR", "comma-separated currencies rotated over the borrowers")
	fs.StringVar(&mode, "mode", "cob", "cob (a close-of-business run turns the loans overdue) or direct (one transaction does, then only the merges are timed)")
	fs.IntVar(&chunkSize, "chunk-size", cob.DefaultChunkSize, "RIVERBANK_COB_CHUNK_SIZE (cob mode)")
	fs.IntVar(&workers, "workers", 20, "RIVERBANK_WORKERS: case.merge runs on the default queue with this many workers")
	fs.BoolVar(&keep, "keep", false, "keep the bench database (its name is printed)")
	fs.BoolVar(&template, "template", false, "keep the seeded database as a template and reuse it on the next run with the same seed and schema")
	fs.DurationVar(&timeout, "timeout", 10*time.Minute, "give up after this long")
	fs.BoolVar(&trace, "trace", false, "print the statements that took longest (client-side time, all connections of this process)")
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
	s.overdueEvery = 1
	s.lateFeeDay = 20
	if err := parseSeedCommon(&s, date, currencies); err != nil {
		return err
	}
	if mode != "cob" && mode != "direct" {
		return fmt.Errorf("unknown --mode %q (cob or direct)", mode)
	}
	if chunkSize < 1 || workers < 1 || timeout <= 0 {
		return errors.New("--chunk-size, --workers and --timeout must be positive")
	}
	fmt.Fprintf(stdout, "machine: %s; load average at start: %s\n", bench.Machine(), loadAverage())
	dsn, drop, err := cobBenchDatabase(ctx, cfg.DatabaseURL, "riverbank_bench_cases_", s, template, keep, stdout)
	if err != nil {
		return err
	}
	defer drop()
	env, err := startCOBWorkers(ctx, dsn, workers, chunkSize, stderr)
	if err != nil {
		return err
	}
	defer env.stop()
	fmt.Fprintf(stdout, "workers: RIVERBANK_WORKERS=%d (case.merge on the default queue: %d; cob queue %d), chunk size %d, mode %s\n",
		workers, jobs.Queues(workers)[jobs.QueueDefault].MaxWorkers, jobs.Queues(workers)[jobs.QueueCOB].MaxWorkers, chunkSize, mode)

	self0, back0, err := cpuTicks(ctx, env.pool)
	if err != nil {
		return err
	}
	env.tracer.print(io.Discard, 0) // reset
	resetPeakRSS()
	before, err := env.q.BenchCOBCounters(ctx)
	if err != nil {
		return err
	}
	var (
		t0             = time.Now()
		completed      time.Duration
		requested      int
		itemsInserted  time.Duration
		firstUnattach  int64
		lastProgressAt = t0
	)
	switch mode {
	case "cob":
		if _, created, err := env.svcs.COB.Start(ctx, s.date); err != nil || !created {
			return fmt.Errorf("start run: created=%v: %w", created, err)
		}
	case "direct":
		err := env.svcs.Store.InTx(ctx, func(tx *db.Tx) error {
			bs, err := tx.BenchCOBInsertOverdueItems(ctx, s.date)
			if err != nil {
				return fmt.Errorf("insert items: %w", err)
			}
			requested, err = collection.RequestMergesTx(ctx, tx, bs)
			return err
		})
		if err != nil {
			return err
		}
		itemsInserted = time.Since(t0)
		t0 = time.Now() // time the merges alone
		fmt.Fprintf(stdout, "one transaction turned %d loans overdue, inserted their items and requested %d merges in %s\n",
			s.loans, requested, itemsInserted.Round(time.Millisecond))
	}
	deadline := t0.Add(timeout)
	var attached time.Duration
	for attached == 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("items still unattached after %s", timeout)
		}
		time.Sleep(50 * time.Millisecond)
		if mode == "cob" && completed == 0 {
			r, err := env.q.GetCOBRun(ctx, s.date)
			if err != nil {
				return err
			}
			if r.Status == db.CobRunStatusFAILED {
				return fmt.Errorf("run FAILED: %d loans failed", r.LoansFailed)
			}
			if r.Status == db.CobRunStatusCOMPLETED {
				completed = time.Since(t0)
			}
		}
		if mode == "cob" && completed == 0 {
			continue // items keep appearing until the last chunk commits
		}
		if firstUnattach == 0 || time.Since(lastProgressAt) > 10*time.Second {
			n, err := env.q.BenchCOBUnattachedItems(ctx)
			if err != nil {
				return err
			}
			if firstUnattach == 0 {
				firstUnattach = max(n, 1)
			} else {
				fmt.Fprintf(stdout, "  %6.1fs: %d items unattached\n", time.Since(t0).Seconds(), n)
			}
			lastProgressAt = time.Now()
		}
		left, err := env.q.BenchCOBMergesPending(ctx)
		if err == nil && !left {
			left, err = env.q.BenchCOBAnyUnattached(ctx)
		}
		if err != nil {
			return err
		}
		if !left {
			attached = time.Since(t0)
		}
	}
	peak := readPeakRSS()
	self1, back1, err := cpuTicks(ctx, env.pool)
	if err != nil {
		return err
	}
	after, err := env.q.BenchCOBCounters(ctx)
	if err != nil {
		return err
	}
	chk, err := env.q.BenchCOBCaseCheck(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\ncases: %d loans of %d borrowers overdue at once (%s mode; load average now %s)\n", s.loans, s.borrowers, mode, loadAverage())
	if mode == "cob" {
		fmt.Fprintf(stdout, "  run COMPLETED after %.2f s (%d items still unattached then)\n", completed.Seconds(), firstUnattach)
		fmt.Fprintf(stdout, "  every item in a case %.2f s after the run started (%.2f s after it completed)\n", attached.Seconds(), (attached - completed).Seconds())
	} else {
		fmt.Fprintf(stdout, "  every item in a case %.2f s after the merges were requested: %.0f merges/s\n", attached.Seconds(), float64(requested)/attached.Seconds())
	}
	fmt.Fprintf(stdout, "  open cases %d for %d overdue borrowers; duplicate OPEN cases: %d; borrowers without exactly one OPEN case: %d\n",
		chk.OpenCases, chk.OverdueBorrowers, chk.DuplicateOpen, chk.BorrowersWithoutOneOpenCase)
	fmt.Fprintf(stdout, "  overdue loans %d, open items %d, in their borrower's OPEN case %d, overdue loans without an open item %d\n",
		chk.OverdueLoans, chk.OpenItems, chk.ItemsInOwnOpenCase, chk.OverdueLoansWithoutItem)
	fmt.Fprintf(stdout, "  CPU (from the start, including the overdue transaction): Postgres backends %.1f s + this process %.1f s\n", float64(back1-back0)/100, float64(self1-self0)/100)
	fmt.Fprintf(stdout, "  peak RSS of this process: %s; WAL %s; database growth %s\n", bench.MiB(peak), bench.MiB(after.WalBytes-before.WalBytes), bench.MiB(after.DbBytes-before.DbBytes))
	ok := chk.DuplicateOpen == 0 && chk.BorrowersWithoutOneOpenCase == 0 && chk.OverdueLoans == int64(s.loans) &&
		chk.OpenItems == chk.OverdueLoans && chk.ItemsInOwnOpenCase == chk.OpenItems && chk.OverdueLoansWithoutItem == 0 &&
		chk.OpenCases == chk.OverdueBorrowers
	fmt.Fprintf(stdout, "  invariants hold: %v\n", ok)
	if trace {
		env.tracer.print(stdout, 25)
	}
	if !ok {
		return errors.New("collection invariants violated")
	}
	return nil
}
