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
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"riverqueue.com/riverui"

	"riverbank/api"
	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/dbhealth"
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
	health   *dbhealth.Monitor
	ready    chan struct{}
}

// New connects to the database (waiting up to cfg.DatabaseWait for it,
// see Connect), checks (or applies, with cfg.Migrate) the schema, and
// builds everything Run starts. Errors are one line that says what to do.
// Once running, the process rides out database outages by itself (see
// internal/dbhealth and the README's "Database outage").
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
	pool, err := Connect(ctx, cfg.DatabaseURL, int32(workers+30), cfg.DatabaseWait, logger)
	if err != nil {
		return nil, err
	}
	// Everything logs through the monitor's handler, River included, so a
	// database outage is told once rather than by every failed attempt.
	health := dbhealth.New(pool.Config().ConnConfig, logger.With("component", "dbhealth"), dbhealth.Options{})
	logger = slog.New(health.Handler(logger.Handler()))
	a := &App{cfg: cfg, logger: logger, pool: pool, health: health, ready: make(chan struct{})}
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
	// Before anything is written: a database copied into another server
	// needs its ledger watermarks rebased (a no-op otherwise).
	if n, err := db.RebaseAfterRestore(ctx, a.pool); err != nil {
		return err
	} else if n >= 0 {
		a.logger.Warn("the database was copied into another server: ledger watermarks rebased", "postings_stamped", n)
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
	a.metrics = metrics.New(store.Queries(), a.logger, a.health.Collector())

	a.riverUI, err = riverui.NewHandler(&riverui.HandlerOpts{
		Endpoints: riverui.NewEndpoints(a.river, nil),
		Logger:    a.logger.With("component", "riverui"),
		Prefix:    "/riverui",
	})
	if err != nil {
		return fmt.Errorf("create river ui: %w", err)
	}

	// The server's limits (api.DefaultLimits), with a write deadline past
	// the longest request: its timeout plus a long-poll's wait.
	limits := api.DefaultLimits
	limits.WriteTimeout = max(limits.WriteTimeout, a.cfg.RequestTimeout+events.MaxWait+10*time.Second)
	limits.HandlerTimeout = max(limits.HandlerTimeout, limits.WriteTimeout-5*time.Second)
	handler := api.NewHandler(api.HandlerOpts{
		Services: &api.Services{Services: svcs, River: a.river, Migrator: a.migrator},
		Metrics:  a.metrics,
		RiverUI:  a.riverUI,
		// The request timeout bounds every request's work; past it a
		// request waiting on the database answers 503.
		RequestTimeout: a.cfg.RequestTimeout,
		Limits:         limits,
		Ready: func(ctx context.Context) error {
			if err := a.pool.Ping(ctx); err != nil {
				return err
			}
			_, err := a.migrator.RequireCurrent(ctx)
			return err
		},
	})
	// Header size and slow-client timeouts: the same limits the handler's
	// deadlines use.
	a.http = api.NewHTTPServer(a.cfg.Addr, handler, limits, slog.NewLogLogger(a.logger.Handler(), slog.LevelWarn))
	return nil
}

// DefaultConnectTimeout bounds one connection attempt when DATABASE_URL
// sets no connect_timeout: without it a host that drops packets (rather
// than refusing) would hold every new connection for the kernel's TCP
// timeout, minutes, instead of failing so that callers answer 503.
const DefaultConnectTimeout = 5 * time.Second

// Connect opens a pool and checks the database answers. When it cannot be
// reached, Connect tries again (every second or two) for up to wait, saying
// once on logger that it waits, and then gives up with an error that names
// the host (never the password) and what to do. wait 0 means one attempt.
// The pool holds up to maxConns connections unless the URL sets
// pool_max_conns, which wins: an operator fitting several instances under
// max_connections (see docs/scaling.md) sizes each one's pool there.
//
// Waiting is what a service under a supervisor wants when it is started
// together with its database (docker compose, a host booting, a failover
// in progress): it comes up as soon as Postgres does, with one log line,
// instead of crash-looping and flooding the supervisor's log. Bounding the
// wait keeps a wrong DATABASE_URL from looking like a hung process: after
// RIVERBANK_DATABASE_WAIT (30s) it exits non-zero with the reason, and the
// supervisor's restart policy takes over.
func Connect(ctx context.Context, dsn string, maxConns int32, wait time.Duration, logger *slog.Logger) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, errors.New("invalid DATABASE_URL: cannot parse it as a Postgres connection string")
	}
	if maxConns > 0 && !setsPoolMaxConns(dsn) {
		pc.MaxConns = maxConns
	}
	if pc.ConnConfig.ConnectTimeout == 0 {
		pc.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("create connection pool: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	begin := time.Now()
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = pool.Ping(pingCtx)
		cancel()
		if err == nil {
			if attempt > 1 {
				logger.Info("database reachable; starting", "waited", time.Since(begin).Round(time.Millisecond).String())
			}
			return pool, nil
		}
		left := wait - time.Since(begin)
		if ctx.Err() != nil || left <= 0 {
			break
		}
		if attempt == 1 {
			logger.Warn("cannot reach the database; waiting for it", "host", pc.ConnConfig.Host, "port", pc.ConnConfig.Port,
				"database", pc.ConnConfig.Database, "up_to", wait.String(), "error", rootCause(err))
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(backoff, left)):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	pool.Close()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("stopped while waiting for the database at %s:%d: %w", pc.ConnConfig.Host, pc.ConnConfig.Port, ctx.Err())
	}
	waited := ""
	if wait > 0 {
		waited = fmt.Sprintf(" after waiting %s (RIVERBANK_DATABASE_WAIT)", wait)
	}
	return nil, fmt.Errorf("cannot reach the database at %s:%d (database %q)%s: %v — is Postgres running and DATABASE_URL right?",
		pc.ConnConfig.Host, pc.ConnConfig.Port, pc.ConnConfig.Database, waited, rootCause(err))
}

// setsPoolMaxConns reports whether a connection string (URL or key=value)
// names pool_max_conns.
func setsPoolMaxConns(dsn string) bool {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		return err == nil && u.Query().Has("pool_max_conns")
	}
	for _, f := range strings.Fields(dsn) {
		if k, _, ok := strings.Cut(f, "="); ok && strings.TrimSpace(k) == "pool_max_conns" {
			return true
		}
	}
	return false
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
	go a.health.Run(hubCtx)
	jobEvents, cancelEvents := a.river.Subscribe(river.EventKindJobCompleted, river.EventKindJobFailed, river.EventKindJobCancelled, river.EventKindJobSnoozed)
	go a.metrics.ObserveJobs(jobEvents)

	serveErr := make(chan error, 1)
	go func() { serveErr <- a.http.Serve(a.listener) }()
	a.logger.Info("riverbank serving", "addr", a.listener.Addr().String(), "workers", a.cfg.Workers, "pool_max_conns", a.pool.Config().MaxConns)
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
