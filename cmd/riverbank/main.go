// Command riverbank is the one binary of riverbank: serve the API, workers
// and River UI; migrate the database; run a local development setup; and run
// benchmarks. `riverbank <command> --help` describes each.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		// After the first signal starts a graceful shutdown, a second one
		// kills the process (default signal handling again).
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "riverbank:", err)
		os.Exit(1)
	}
}

const usage = `riverbank — a Postgres-only back office for lending and commerce.

Usage: riverbank <command> [flags]

Commands:
  serve     serve the HTTP API, River workers and the River UI
  migrate   apply River's and riverbank's database migrations (idempotent)
  dev       local setup: private Postgres (unless DATABASE_URL is set), migrate, serve on :8080
  bench     run a benchmark scenario against a database
  version   print the version

Run 'riverbank <command> --help' for a command's flags. Every flag can also be
set by its environment variable (shown in --help); flags win.
`

// run is the whole program with its dependencies passed in, so tests can run
// it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(ctx, rest, getenv, stdout, stderr)
	case "migrate":
		return runMigrate(ctx, rest, getenv, stdout, stderr)
	case "dev":
		return runDev(ctx, rest, getenv, stdout, stderr)
	case "bench":
		return runBench(ctx, rest, getenv, stdout, stderr)
	case "version":
		return runVersion(stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func newLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level}))
}
