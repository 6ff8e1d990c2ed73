// Package server assembles one riverbank process: the pgx pool, the River
// client with its workers and periodic jobs, the HTTP API with the River UI,
// metrics, and the ordered graceful shutdown. `riverbank serve`, `riverbank
// dev` and the end-to-end tests all run it.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"riverqueue.com/riverui"

	"riverbank/api"
	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/domains"
	"riverbank/internal/events"
	"riverbank/internal/metrics"
	"riverbank/jobs"
)

// App is one running riverbank process.
type App struct {
	cfg      *config.Config
	logger   *slog.Logger
	pool     *pgxpool.Pool
	river    *river.Client[pgx.Tx]
	migrator *db.Migrator
	metrics  *metrics.Metrics
	riverUI  *riverui.Handler
	http     *http.Server
	listener net.Listener
	hub      *events.Hub
	ready    chan struct{}
}

// New connects to the database, checks (or applies, with cfg.Migrate) the
// schema, and builds everything Run starts. Errors are one line that says
// what to do.
func New(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*App, error) {
	if err := cfg.RequireDatabase(); err != nil {
		return nil, err
	}
	if err := cfg.RequireAuth(); err != nil {
		return nil, err
	}
	// Every River worker may hold a connection, plus River's own
	// maintenance and the HTTP handlers.
	workers := 0
	for _, q := range jobs.Queues(cfg.Workers) {
		workers += q.MaxWorkers
	}
	pool, err := Connect(ctx, cfg.DatabaseURL, int32(workers+30))
	if err != nil {
		return nil, err
	}
	a := &App{cfg: cfg, logger: logger, pool: pool, ready: make(chan struct{})}
	if err := a.init(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return a, nil
}

func (a *App) init(ctx context.Context) error {
	m, err := db.NewMigrator(a.pool)
	if err != nil {
		return err
	}
	a.migrator = m
	if a.cfg.Migrate {
		res, err := m.Migrate(ctx)
		if err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
		a.logger.Info("migrations applied", "river", res.RiverApplied, "app_steps", len(res.AppApplied))
	}
	st, err := m.RequireCurrent(ctx)
	if err != nil {
		return err
	}
	if st.AppVersion > st.AppWant {
		a.logger.Warn("database schema is newer than this binary; running anyway", "app_version", st.AppVersion, "app_want", st.AppWant)
	}

	// Wiring without cycles: an insert-only River client (no workers, never
	// started) is all the store needs; the domain services are built on the
	// store; the workers on the services; and only then the River client
	// that runs them.
	inserter, err := jobs.NewClient(a.pool, a.cfg, a.logger, nil)
	if err != nil {
		return err
	}
	store := db.NewStore(a.pool, inserter)
	svcs := domains.New(a.cfg, a.logger, store)
	// One LISTEN connection wakes every long-polling reader of the feed.
	a.hub = events.NewHub(a.pool, a.logger.With("component", "events"))
	svcs.Events.SetHub(a.hub)
	reg, err := jobs.NewRegistration(svcs)
	if err != nil {
		return err
	}
	a.river, err = jobs.NewClient(a.pool, a.cfg, a.logger, reg)
	if err != nil {
		return err
	}
	a.metrics = metrics.New(store.Queries(), a.logger)

	a.riverUI, err = riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints(a.river, nil),
		Logger:    a.logger.With("component", "riverui"),
		Prefix:    "/riverui",
	})
	if err != nil {
		return fmt.Errorf("create river ui: %w", err)
	}

	handler := api.NewHandler(api.HandlerOpts{
		Services: &api.Services{Services: svcs, River: a.river, Migrator: a.migrator},
		Metrics:  a.metrics,
		RiverUI:  a.riverUI,
		Limits:   api.DefaultLimits,
		Ready: func(ctx context.Context) error {
			if err := a.pool.Ping(ctx); err != nil {
				return err
			}
			_, err := a.migrator.RequireCurrent(ctx)
			return err
		},
	})
	// Header size and slow-client timeouts: api.DefaultLimits, the same
	// the handler's deadlines use.
	a.http = api.NewHTTPServer(a.cfg.Addr, handler, api.DefaultLimits, slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn))
	return nil
}

// Connect opens a pool and checks the database answers, with an error that
// names the host (never the password) and what to do.
func Connect(ctx context.Context, dsn string, maxConns int32) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, errors.New("invalid DATABASE_URL: cannot parse it as a Postgres connection string")
	}
	if maxConns > 0 {
		pc.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("create connection pool: %w", err)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := pool.Ping(pingCtx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot reach the database at %s:%d (database %q): %v — is Postgres running and DATABASE_URL right?",
			pc.ConnConfig.Host, pc.ConnConfig.Port, pc.ConnConfig.Database, rootCause(err))
	}
	return pool, nil
}

func rootCause(err error) error {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err
		}
		err = u
	}
}

// Listen binds the HTTP address (":0" picks a free port). Run calls it if
// the caller has not.
func (a *App) Listen() error {
	if a.listener != nil {
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w (set RIVERBANK_ADDR or --addr to another address)", a.cfg.Addr, err)
	}
	a.listener = ln
	return nil
}

// BaseURL is the http:// URL the server listens on, valid after Listen.
func (a *App) BaseURL() string {
	addr := a.listener.Addr().(*net.TCPAddr)
	host := addr.IP.String()
	if addr.IP.IsUnspecified() {
		host = "localhost"
	}
	return (&url.URL{Scheme: "http", Host: net.JoinHostPort(host, fmt.Sprint(addr.Port))}).String()
}

// Ready is closed once the server accepts requests and River runs.
func (a *App) Ready() <-chan struct{} { return a.ready }

// Pool is the process's connection pool.
func (a *App) Pool() *pgxpool.Pool { return a.pool }

// River is the process's River client.
func (a *App) River() *river.Client[pgx.Tx] { return a.river }

// Run serves until ctx is cancelled, then shuts down in order: stop
// accepting HTTP and drain in-flight requests, soft-stop River (running
// jobs finish, no new ones start) within the shutdown timeout, then
// hard-stop (cancel jobs still running; River records them as errored so
// they are retried, never left `running`), then close the pool.
func (a *App) Run(ctx context.Context) error {
	defer a.pool.Close()
	if err := a.Listen(); err != nil {
		return err
	}
	// River gets a context that is never cancelled: cancelling Start's
	// context makes River hard-stop (cancel running jobs) at once, and the
	// shutdown below wants a soft stop first.
	if err := a.riverUI.Start(ctx); err != nil {
		return fmt.Errorf("start river ui: %w", err)
	}
	if err := a.river.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("start river: %w", err)
	}
	hubCtx, stopHub := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHub()
	go a.hub.Run(hubCtx)
	jobEvents, cancelEvents := a.river.Subscribe(river.EventKindJobCompleted, river.EventKindJobFailed, river.EventKindJobCancelled, river.EventKindJobSnoozed)
	go a.metrics.ObserveJobs(jobEvents)

	serveErr := make(chan error, 1)
	go func() { serveErr <- a.http.Serve(a.listener) }()
	a.logger.Info("riverbank serving", "addr", a.listener.Addr().String(), "workers", a.cfg.Workers)
	close(a.ready)

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		if !errors.Is(err, http.ErrServerClosed) {
			runErr = fmt.Errorf("http server: %w", err)
		}
	}

	a.logger.Info("shutting down", "timeout", a.cfg.ShutdownTimeout)
	deadline := time.Now().Add(a.cfg.ShutdownTimeout)
	shutdownCtx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
	defer cancel()
	if err := a.http.Shutdown(shutdownCtx); err != nil {
		a.logger.Warn("http shutdown incomplete", "error", err)
	}
	if err := a.river.Stop(shutdownCtx); err != nil {
		a.logger.Warn("river soft stop timed out; cancelling running jobs", "error", err)
		hardCtx, hardCancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer hardCancel()
		if err := a.river.StopAndCancel(hardCtx); err != nil {
			a.logger.Error("river hard stop failed", "error", err)
		}
	}
	cancelEvents()
	a.logger.Info("shutdown complete")
	return runErr
}
