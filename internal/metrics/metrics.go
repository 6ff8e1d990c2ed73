// Package metrics owns riverbank's Prometheus registry: HTTP latency by
// route, River job outcomes and start latency (scheduled → started), and
// gauges read from Postgres at scrape time (jobs by kind and state, queue
// depth, dead letters by kind), so every instance reports the same database-wide truth without
// keeping counters in memory.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/riverqueue/river"

	"riverbank/internal/db"
	"riverbank/internal/orders"
)

// Metrics is one process's registry and instruments.
type Metrics struct {
	// Registry holds every riverbank metric plus Go and process collectors.
	Registry *prometheus.Registry

	httpDuration *prometheus.HistogramVec
	jobStart     *prometheus.HistogramVec
	jobRun       *prometheus.HistogramVec
	jobOutcomes  *prometheus.CounterVec
}

// New creates the registry. q is used at scrape time for database gauges;
// extra collectors (the database monitor's) are registered with the rest.
func New(q *db.Queries, logger *slog.Logger, extra ...prometheus.Collector) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "riverbank_http_request_duration_seconds",
			Help:    "HTTP request latency by route pattern, method and status.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method", "status"}),
		jobStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "riverbank_job_start_latency_seconds",
			Help:    "Time from a job's scheduled_at until a worker started it, by kind.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"kind"}),
		jobRun: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "riverbank_job_run_duration_seconds",
			Help:    "Time a job's worker ran, by kind.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"kind"}),
		jobOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "riverbank_job_outcomes_total",
			Help: "Job attempts finished by this process, by kind and outcome (completed, failed, cancelled, snoozed).",
		}, []string{"kind", "outcome"}),
	}
	reg.MustRegister(m.httpDuration, m.jobStart, m.jobRun, m.jobOutcomes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&dbCollector{q: q, logger: logger}, &staleOrdersCollector{q: q, logger: logger})
	reg.MustRegister(extra...)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Middleware records latency by the ServeMux pattern that matched (bounded
// cardinality: never the raw path).
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		m.httpDuration.WithLabelValues(route, r.Method, strconv.Itoa(rec.status)).Observe(time.Since(start).Seconds())
	})
}

// ObserveJobs consumes River events until ch closes.
func (m *Metrics) ObserveJobs(ch <-chan *river.Event) {
	for ev := range ch {
		if ev == nil || ev.Job == nil {
			continue
		}
		kind := ev.Job.Kind
		outcome := string(ev.Kind)
		switch ev.Kind {
		case river.EventKindJobCompleted:
			outcome = "completed"
		case river.EventKindJobFailed:
			outcome = "failed"
		case river.EventKindJobCancelled:
			outcome = "cancelled"
		case river.EventKindJobSnoozed:
			outcome = "snoozed"
		}
		m.jobOutcomes.WithLabelValues(kind, outcome).Inc()
		if ev.JobStats != nil {
			m.jobStart.WithLabelValues(kind).Observe(ev.JobStats.QueueWaitDuration.Seconds())
			m.jobRun.WithLabelValues(kind).Observe(ev.JobStats.RunDuration.Seconds())
		}
	}
}

// dbCollector reads job counts, queue depth and dead letters from river_job
// at scrape time, one grouped query each.
type dbCollector struct {
	q      *db.Queries
	logger *slog.Logger
}

var (
	jobsDesc      = prometheus.NewDesc("riverbank_jobs", "River jobs in the database by kind and state (live states and discarded; completed and cancelled are not counted).", []string{"kind", "state"}, nil)
	depthDesc     = prometheus.NewDesc("riverbank_queue_depth", "River jobs available to work now (state available, scheduled_at <= now) by queue.", []string{"queue"}, nil)
	scrapeErrDesc = prometheus.NewDesc("riverbank_metrics_db_scrape_errors", "1 when the database gauges could not be read on this scrape.", nil, nil)
	// deadLettersDesc is the dead-letter queue (internal/deadletter) by
	// kind, the series to alert on: riverbank_jobs{state="discarded"}
	// carries the same numbers, but a dedicated name keeps alert rules and
	// dashboards independent of River's state names. A kind with no
	// discarded job has no series (absent means zero).
	// cobLoansDesc is close-of-business progress: the newest run and any
	// run not closed, by business date and state (total, done, failed);
	// chunk durations are riverbank_job_run_duration_seconds{kind="cob.chunk"}.
	cobLoansDesc    = prometheus.NewDesc("riverbank_cob_loans", "Loans of close-of-business runs (the newest and any not closed) by business date and state: total, done, failed.", []string{"date", "state"}, nil)
	cobChunksDesc   = prometheus.NewDesc("riverbank_cob_chunks", "Chunks of close-of-business runs (the newest and any not closed) by business date and state: total, done.", []string{"date", "state"}, nil)
	cobOpenDesc     = prometheus.NewDesc("riverbank_cob_run_open", "1 for a close-of-business run that is not closed (RUNNING or FAILED), by business date and status.", []string{"date", "status"}, nil)
	deadLettersDesc = prometheus.NewDesc("riverbank_dead_letters", "Discarded River jobs (dead letters: attempts exhausted, waiting for an operator to retry them via POST /v1/dead-letters/{job_id}/retry or the River UI) by kind.", []string{"kind"}, nil)
)

func (c *dbCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- jobsDesc
	ch <- depthDesc
	ch <- deadLettersDesc
	ch <- cobLoansDesc
	ch <- cobChunksDesc
	ch <- cobOpenDesc
	ch <- scrapeErrDesc
}

func (c *dbCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	failed := 0.0
	counts, err := c.q.JobCountsByKindState(ctx)
	if err != nil {
		c.logger.Warn("metrics: read job counts", "error", err)
		failed = 1
	}
	for _, r := range counts {
		ch <- prometheus.MustNewConstMetric(jobsDesc, prometheus.GaugeValue, float64(r.Count), r.Kind, string(r.State))
	}
	depth, err := c.q.QueueDepth(ctx)
	if err != nil {
		c.logger.Warn("metrics: read queue depth", "error", err)
		failed = 1
	}
	for _, r := range depth {
		ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, float64(r.Count), r.Queue)
	}
	dead, err := c.q.DeadLetterCountsByKind(ctx)
	if err != nil {
		c.logger.Warn("metrics: read dead letters", "error", err)
		failed = 1
	}
	for _, r := range dead {
		ch <- prometheus.MustNewConstMetric(deadLettersDesc, prometheus.GaugeValue, float64(r.Count), r.Kind)
	}
	runs, err := c.q.COBProgress(ctx)
	if err != nil {
		c.logger.Warn("metrics: read close-of-business progress", "error", err)
		failed = 1
	}
	for _, r := range runs {
		d := r.BusinessDate.Format("2006-01-02")
		ch <- prometheus.MustNewConstMetric(cobLoansDesc, prometheus.GaugeValue, float64(r.LoansTotal), d, "total")
		ch <- prometheus.MustNewConstMetric(cobLoansDesc, prometheus.GaugeValue, float64(r.LoansDone), d, "done")
		ch <- prometheus.MustNewConstMetric(cobLoansDesc, prometheus.GaugeValue, float64(r.LoansFailed), d, "failed")
		ch <- prometheus.MustNewConstMetric(cobChunksDesc, prometheus.GaugeValue, float64(r.ChunksTotal), d, "total")
		ch <- prometheus.MustNewConstMetric(cobChunksDesc, prometheus.GaugeValue, float64(r.ChunksDone), d, "done")
		if r.Status != db.CobRunStatusCOMPLETED {
			ch <- prometheus.MustNewConstMetric(cobOpenDesc, prometheus.GaugeValue, 1, d, string(r.Status))
		}
	}
	ch <- prometheus.MustNewConstMetric(scrapeErrDesc, prometheus.GaugeValue, failed)
}

// staleOrdersCollector reports, at scrape time, the orders the order.sweep
// job exists for: waiting in CREATED for over a minute with no live
// order.confirm job (read through the partial index of CREATED orders, and
// capped). Non-zero between sweeps is normal; non-zero for several minutes
// means confirmations are not being worked.
type staleOrdersCollector struct {
	q      *db.Queries
	logger *slog.Logger
}

var staleOrdersDesc = prometheus.NewDesc("riverbank_orders_stale_created",
	"Orders in CREATED for over a minute with no live order.confirm job of their own (normally the lingering confirmer takes them within milliseconds; the sweeper re-enqueues these every minute).", nil, nil)

func (c *staleOrdersCollector) Describe(ch chan<- *prometheus.Desc) { ch <- staleOrdersDesc }

func (c *staleOrdersCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, err := orders.StaleCount(ctx, c.q)
	if err != nil {
		// Like dbCollector: skip the sample rather than fail the scrape.
		c.logger.Warn("metrics: count stale orders", "error", err)
		return
	}
	ch <- prometheus.MustNewConstMetric(staleOrdersDesc, prometheus.GaugeValue, float64(n))
}
