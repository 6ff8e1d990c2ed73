// Package dbhealth tells whether Postgres answers, and keeps a database
// outage from flooding the logs.
//
// While Postgres is unreachable every part of a riverbank process fails at
// its own pace: each API call (answered 503 database_unavailable), each
// River producer's fetch (every FetchPollInterval per queue), the notifier,
// the leader elector, the periodic-job enqueuer, the readiness probe. Each
// of them logging every failed attempt turned a five-second outage into
// over a thousand log lines (measured by the outage test in cmd/riverbank),
// burying what happened. A Monitor instead:
//
//   - probes the database on a dedicated connection (not the pool, so a
//     saturated pool is not mistaken for an outage) every Interval, and at
//     once when any warning is logged;
//   - logs the outage when it begins (error level, with the first error),
//     every ReportEvery while it lasts, and when it ends (warn level, so
//     RIVERBANK_LOG_LEVEL=warn still shows both), with how long it lasted
//     and how many log lines it kept back;
//   - wraps the process's slog handler (Handler) so that while the database
//     is down each distinct (level, message) passes once and its repeats
//     are counted instead of written. Nothing is hidden while the database
//     is up, and the first line of every kind still shows during an outage,
//     so an unrelated error is not lost; only the repetition is.
//
// River's own logging is handled the same way rather than by lowering its
// logger's level: River logs through the process's logger, so its errors
// stay visible when they are not outage noise, and its per-attempt errors
// during an outage collapse like everyone else's.
package dbhealth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"riverbank/internal/db"
)

// Options tune a Monitor; zero values take the defaults.
type Options struct {
	// Interval between probes (default 1s): how soon an outage and a
	// recovery are noticed when nothing else prompts a probe.
	Interval time.Duration
	// Timeout bounds one probe, connecting included (default 2s): a
	// database that does not answer within it counts as down.
	Timeout time.Duration
	// ReportEvery is how often a continuing outage is logged (default 30s).
	ReportEvery time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Monitor watches one database. Build it with New, start Run, and log
// through Handler.
type Monitor struct {
	cfg    *pgx.ConnConfig
	logger *slog.Logger
	opts   Options
	wake   chan struct{}

	up         atomic.Bool
	outages    atomic.Int64
	suppressed atomic.Int64

	mu         sync.Mutex
	downSince  time.Time
	lastReport time.Time
	failures   int            // failed probes in this outage
	seen       map[string]int // (level, message) → repeats kept back in this outage
}

// New returns a monitor of the database cfg connects to (a copy is taken;
// the monitor's session is named riverbank-dbhealth). It starts out up: the
// process has just connected. Its own lines go to logger, never through
// Handler, so they are never held back.
func New(cfg *pgx.ConnConfig, logger *slog.Logger, opts Options) *Monitor {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 2 * time.Second
	}
	if opts.ReportEvery <= 0 {
		opts.ReportEvery = 30 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := cfg.Copy()
	if c.RuntimeParams == nil {
		c.RuntimeParams = map[string]string{}
	}
	c.RuntimeParams["application_name"] = "riverbank-dbhealth"
	m := &Monitor{cfg: c, logger: logger, opts: opts, wake: make(chan struct{}, 1), seen: map[string]int{}}
	m.up.Store(true)
	return m
}

// Up reports whether the last probe reached the database.
func (m *Monitor) Up() bool { return m.up.Load() }

// Outages is how many outages this process has seen.
func (m *Monitor) Outages() int64 { return m.outages.Load() }

// Suppressed is how many log lines outages have kept back in total.
func (m *Monitor) Suppressed() int64 { return m.suppressed.Load() }

// Probe asks for a probe now (without waiting for it). Anything that
// suspects the database may call it; Handler does on every warning.
func (m *Monitor) Probe() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Report tells the monitor that a caller's database call failed with err.
// An error that says the connection itself failed (refused, terminated,
// broken: db.IsUnavailable, but not a mere deadline, which a saturated
// database causes too) marks the database down at once, so repeats are
// held back from the first failure on rather than from the next probe;
// the probes then tell when it is back (at once, if it never left). Other
// errors only ask for a probe.
func (m *Monitor) Report(err error) {
	if err == nil {
		return
	}
	if m.up.Load() && db.IsUnavailable(err) && !errors.Is(err, context.DeadlineExceeded) {
		m.observe(err, m.opts.Now())
	}
	m.Probe()
}

// minGap keeps prompted probes from running more often than this, however
// many warnings ask for one.
const minGap = 200 * time.Millisecond

// Run probes until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	var (
		conn   *pgx.Conn
		connAt time.Time // no later than conn's session began
	)
	defer func() {
		if conn != nil {
			_ = conn.Close(context.Background())
		}
	}()
	timer := time.NewTimer(m.opts.Interval)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-m.wake:
			timer.Stop()
		}
		// started is taken first: a failure reported after it makes this
		// probe's success moot (observe), one reported before it retires
		// the session below.
		started := m.opts.Now()
		if conn != nil && !m.Up() && connAt.Before(m.since()) {
			// A session older than the outage may simply not have been
			// told yet (a shutdown ends sessions one by one): only a new
			// one proves the database is back.
			_ = conn.Close(ctx)
			conn = nil
		}
		prev := conn
		var err error
		conn, err = m.probe(ctx, conn)
		if ctx.Err() != nil {
			return
		}
		if conn != nil && conn != prev {
			connAt = started
		}
		m.observe(err, started)
		wait := m.opts.Interval
		select {
		case <-ctx.Done():
			return
		case <-time.After(minGap):
			wait -= minGap
		}
		timer.Reset(max(wait, 0))
	}
}

// since is when the current outage began.
func (m *Monitor) since() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.downSince
}

// probe pings the database on conn, (re)connecting when there is none. A
// failure on a connection that was open before is tried once more on a new
// one: the old session may have been ended (a restart that is already
// over, an idle timeout) while the server is fine.
func (m *Monitor) probe(ctx context.Context, conn *pgx.Conn) (*pgx.Conn, error) {
	for attempt := 0; ; attempt++ {
		fresh := conn == nil
		pctx, cancel := context.WithTimeout(ctx, m.opts.Timeout)
		var err error
		if fresh {
			conn, err = pgx.ConnectConfig(pctx, m.cfg)
		}
		if err == nil {
			err = conn.Ping(pctx)
		}
		cancel()
		if err == nil {
			return conn, nil
		}
		if conn != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
			conn = nil
		}
		if fresh || attempt > 0 || ctx.Err() != nil {
			return nil, err
		}
	}
}

// observe records the outcome of a probe that started at started (or of
// a reported failure) and logs the transitions.
func (m *Monitor) observe(err error, started time.Time) {
	now := m.opts.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	wasUp := m.up.Load()
	switch {
	case err == nil && wasUp:
	case err == nil && started.Before(m.downSince):
		// A probe that began before a reported failure says nothing
		// about after it.
	case err == nil:
		kept, top := m.takeSeen()
		m.up.Store(true)
		m.logger.Warn("database reachable again; work resumes",
			"down_for", now.Sub(m.downSince).Round(time.Millisecond).String(),
			"failed_probes", m.failures, "log_lines_held_back", kept, "held_back_by_message", top)
	case wasUp:
		m.up.Store(false)
		m.outages.Add(1)
		m.downSince, m.lastReport, m.failures = now, now, 1
		m.logger.Error("database unreachable: API calls answer 503 database_unavailable, jobs wait, and everything resumes by itself when it is back; repeated log lines are held back meanwhile",
			"error", err)
	default:
		m.failures++
		if now.Sub(m.lastReport) >= m.opts.ReportEvery {
			m.lastReport = now
			kept, top := m.peekSeen()
			m.logger.Error("database still unreachable",
				"down_for", now.Sub(m.downSince).Round(time.Second).String(),
				"failed_probes", m.failures, "log_lines_held_back", kept, "held_back_by_message", top, "error", err)
		}
	}
}

// peekSeen sums the held-back lines and names the most frequent messages.
// m.mu is held.
func (m *Monitor) peekSeen() (int, string) {
	type kv struct {
		k string
		n int
	}
	var all []kv
	total := 0
	for k, n := range m.seen {
		if n > 0 {
			all = append(all, kv{k, n})
			total += n
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].n > all[j].n || all[i].n == all[j].n && all[i].k < all[j].k })
	if len(all) > 5 {
		all = all[:5]
	}
	parts := make([]string, len(all))
	for i, e := range all {
		parts[i] = fmt.Sprintf("%d× %s", e.n, e.k)
	}
	return total, strings.Join(parts, "; ")
}

// takeSeen is peekSeen, and forgets the outage's messages. m.mu is held.
func (m *Monitor) takeSeen() (int, string) {
	total, top := m.peekSeen()
	m.seen = map[string]int{}
	return total, top
}

// maxKeys bounds the distinct messages an outage remembers.
const maxKeys = 1000

// hold reports whether a record should be held back: only while the
// database is down, and not the first of its (level, message).
func (m *Monitor) hold(level slog.Level, msg string) bool {
	if m.up.Load() {
		return false
	}
	key := level.String() + " " + msg
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.up.Load() {
		return false
	}
	n, ok := m.seen[key]
	if !ok {
		// Messages are constants in practice; should one carry varying
		// text, distinct lines pass and the map stays bounded.
		if len(m.seen) < maxKeys {
			m.seen[key] = 0
		}
		return false
	}
	m.seen[key] = n + 1
	m.suppressed.Add(1)
	return true
}

// Handler wraps next: records pass unchanged while the database is up;
// while it is down, the first record of each (level, message) passes and
// the rest are counted and reported when the outage is logged. Every
// warning or error prompts a probe, and one that carries an error value
// is Reported, so an outage is noticed with the first failure it causes
// rather than at the next interval.
func (m *Monitor) Handler(next slog.Handler) slog.Handler {
	return &handler{m: m, next: next}
}

type handler struct {
	m    *Monitor
	next slog.Handler
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

func (h *handler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn && h.m.up.Load() {
		reported := false
		r.Attrs(func(a slog.Attr) bool {
			if a.Value.Kind() != slog.KindAny {
				return true
			}
			if err, ok := a.Value.Any().(error); ok {
				h.m.Report(err)
				reported = true
				return false
			}
			return true
		})
		if !reported {
			h.m.Probe()
		}
	}
	if h.m.hold(r.Level, r.Message) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &handler{m: h.m, next: h.next.WithAttrs(attrs)}
}

func (h *handler) WithGroup(name string) slog.Handler {
	return &handler{m: h.m, next: h.next.WithGroup(name)}
}

var (
	upDesc         = prometheus.NewDesc("riverbank_database_up", "1 when this process's last probe reached Postgres (every second), 0 during an outage.", nil, nil)
	outagesDesc    = prometheus.NewDesc("riverbank_database_outages_total", "Database outages this process has seen (probes failing after succeeding).", nil, nil)
	suppressedDesc = prometheus.NewDesc("riverbank_log_lines_held_back_total", "Log lines held back during database outages (repeats of a line already logged in the same outage).", nil, nil)
)

// Collector returns the monitor's Prometheus metrics: riverbank_database_up,
// riverbank_database_outages_total and riverbank_log_lines_held_back_total.
func (m *Monitor) Collector() prometheus.Collector { return collector{m} }

type collector struct{ m *Monitor }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- upDesc
	ch <- outagesDesc
	ch <- suppressedDesc
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	up := 0.0
	if c.m.Up() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(outagesDesc, prometheus.CounterValue, float64(c.m.Outages()))
	ch <- prometheus.MustNewConstMetric(suppressedDesc, prometheus.CounterValue, float64(c.m.Suppressed()))
}
