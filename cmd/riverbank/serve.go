package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"

	"riverbank"
	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/server"
)

func newFlagSet(name, summary string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("riverbank "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: riverbank %s [flags]\n\n%s\n\nFlags:\n", name, summary)
		fs.PrintDefaults()
	}
	return fs
}

func runServe(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "Serve the HTTP API, the River workers and periodic jobs, and the River UI.\nRefuses to start on an outdated schema unless --migrate is given.", stderr)
	loader := config.Register(fs, getenv, config.All)
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loader.Load(fs)
	if err != nil {
		return err
	}
	logger := newLogger(stderr, cfg.LogLevel)
	app, err := server.New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return app.Run(ctx)
}

func runMigrate(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("migrate", "Apply River's migrations and the steps of schema.sql. Idempotent; concurrent runs serialise on an advisory lock.", stderr)
	loader := config.Register(fs, getenv, config.ForMigrate)
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
	pool, err := server.Connect(ctx, cfg.DatabaseURL, 2, cfg.DatabaseWait, newLogger(stderr, cfg.LogLevel))
	if err != nil {
		return err
	}
	defer pool.Close()
	m, err := db.NewMigrator(pool)
	if err != nil {
		return err
	}
	res, err := m.Migrate(ctx)
	if err != nil {
		return err
	}
	st, err := m.Status(ctx)
	if err != nil {
		return err
	}
	if res.RebasedPostings >= 0 {
		fmt.Fprintf(stdout, "the database was copied into another server: ledger watermarks rebased (%d applied postings stamped)\n", res.RebasedPostings)
	}
	if len(res.RiverApplied) == 0 && len(res.AppApplied) == 0 {
		fmt.Fprintf(stdout, "schema already current: River migration %d, app step %d\n", st.RiverVersion, st.AppVersion)
		return nil
	}
	for _, v := range res.RiverApplied {
		fmt.Fprintf(stdout, "applied River migration %d\n", v)
	}
	for _, s := range res.AppApplied {
		fmt.Fprintf(stdout, "applied schema step %d (%s)\n", s.Version, s.Name)
	}
	fmt.Fprintf(stdout, "schema current: River migration %d, app step %d\n", st.RiverVersion, st.AppVersion)
	return nil
}

func runVersion(stdout io.Writer) error {
	fmt.Fprintf(stdout, "riverbank %s (%s)\n", riverbank.Version, runtime.Version())
	return nil
}
