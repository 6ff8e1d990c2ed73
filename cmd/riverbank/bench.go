package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"riverbank/internal/bench"
)

// benchScenario runs one named benchmark.
type benchScenario struct {
	summary string
	run     func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error
}

// benchScenarios lists every scenario of `riverbank bench`.
var benchScenarios = map[string]benchScenario{}

func runBench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	names := make([]string, 0, len(benchScenarios))
	for n := range benchScenarios {
		names = append(names, n)
	}
	sort.Strings(names)
	printUsage := func(w io.Writer) {
		fmt.Fprintln(w, "Usage: riverbank bench <scenario> [flags]\n\nScenarios:")
		for _, n := range names {
			fmt.Fprintf(w, "  %-10s %s\n", n, benchScenarios[n].summary)
		}
		if len(names) == 0 {
			fmt.Fprintln(w, "  (none yet)")
		}
		fmt.Fprintln(w, "\nRun 'riverbank bench <scenario> --help' for its flags.")
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stdout)
		if len(args) == 0 {
			return errors.New("no scenario given")
		}
		return nil
	}
	sc, ok := benchScenarios[args[0]]
	if !ok {
		printUsage(stderr)
		return fmt.Errorf("unknown scenario %q", args[0])
	}
	return sc.run(ctx, args[1:], getenv, stdout, stderr)
}

// statementsStart resets pg_stat_statements when on; it returns whether the
// breakdown can be printed (and says why not once).
func statementsStart(ctx context.Context, on bool, dsn string, stdout io.Writer) bool {
	if !on {
		return false
	}
	if err := bench.ResetStatements(ctx, dsn); err != nil {
		fmt.Fprintf(stdout, "  (no statement breakdown: %v)\n", err)
		return false
	}
	return true
}

// statementsPrint prints the breakdown since statementsStart per unit.
func statementsPrint(ctx context.Context, on bool, dsn string, stdout io.Writer, unit string, units int64) {
	if !on {
		return
	}
	if err := bench.PrintStatements(ctx, stdout, dsn, unit, units, 1); err != nil {
		fmt.Fprintf(stdout, "  (no statement breakdown: %v)\n", err)
	}
}
