package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"riverbank"
	"riverbank/internal/events"
	"riverbank/internal/metrics"
)

// MaxBodyBytes bounds every request body except POST /v1/batches
// (MaxBatchBodyBytes); batch-sized writes belong in a batch.
const MaxBodyBytes = 1 << 20

// HandlerOpts are the pieces NewHandler assembles.
type HandlerOpts struct {
	Services *Services
	Metrics  *metrics.Metrics
	// RiverUI is the River UI handler, mounted at /riverui/ behind auth.
	RiverUI http.Handler
	// Ready reports whether the process can serve (database reachable,
	// schema current); /readyz answers 503 with its error.
	Ready func(ctx context.Context) error
	// RequestTimeout, when positive, is the deadline of every request's
	// context (see withDeadline).
	RequestTimeout time.Duration
	// Limits are the server's limits (zero fields: DefaultLimits); pass
	// the same to NewHTTPServer.
	Limits Limits
}

// publicPaths need no token: probes, the API description and its docs.
func isPublic(path string) bool {
	switch path {
	case "/healthz", "/readyz", "/openapi.json", "/openapi.yaml", "/openapi-3.0.json", "/openapi-3.0.yaml", "/docs":
		return true
	}
	return strings.HasPrefix(path, "/docs/assets/") || strings.HasPrefix(path, "/schemas/")
}

// NewHandler returns the whole HTTP surface: huma operations under /v1,
// probes, docs, metrics and the River UI, wrapped in recovery, deadlines,
// access logging, metrics, body limits and auth.
func NewHandler(opts HandlerOpts) http.Handler {
	s := opts.Services
	mux := http.NewServeMux()
	api := NewAPI(mux)
	Register(api, s)

	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := opts.Ready(ctx); err != nil {
			s.Logger.Warn("not ready", "error", err)
			writeProblem(w, newProblem(http.StatusServiceUnavailable, "unavailable", "not ready: "+readyReason(err)))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
	})
	registerDocs(mux)
	mux.Handle("GET /metrics", opts.Metrics.Handler())
	if opts.RiverUI != nil {
		registerRiverUI(mux, opts.RiverUI, newRiverUIAuth(s.Config.APITokens, s.Config.AuthOff, s.Logger))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// The catch-all keeps 404s in problem+json, but it also shadows the
		// mux's own 405: ask the mux which other methods the path has.
		if allowed := allowedMethods(mux, r); len(allowed) > 0 {
			w.Header().Set("Allow", strings.Join(allowed, ", "))
			writeProblem(w, newProblem(http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s is not allowed on %s; allowed: %s", r.Method, r.URL.Path, strings.Join(allowed, ", "))))
			return
		}
		writeProblem(w, newProblem(http.StatusNotFound, riverbank.ENOTFOUND, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path)))
	})

	var h http.Handler = mux
	h = authMiddleware(s.Config.APITokens, s.Config.AuthOff, h)
	h = limitBody(h)
	h = opts.Metrics.Middleware(h)
	h = accessLog(s.Logger, h)
	h = withDeadlines(opts.Limits, h)
	h = recoverer(s.Logger, h)
	// Outermost: the request it passes on is a copy with the deadline,
	// and the metrics and access log read the route the mux records on
	// the request they pass on.
	h = withDeadline(opts.RequestTimeout, h)
	return h
}

// readyReason keeps readiness failures short and free of connection strings.
func readyReason(err error) string {
	msg := err.Error()
	if strings.Contains(msg, "riverbank migrate") {
		return "database schema is out of date: run `riverbank migrate`"
	}
	return "database unreachable"
}

// authMiddleware accepts `Authorization: Bearer <token>` on every
// non-public path. The River UI has its own guard (riverui_auth.go: login
// form and session cookie, bearer, basic auth).
func authMiddleware(tokens []string, off bool, next http.Handler) http.Handler {
	// Constant time, against every token (auth.go).
	valid := newTokenSet(tokens).match
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if off || isPublic(r.URL.Path) || isRiverUIPath(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		authz := r.Header.Get("Authorization")
		// The scheme is case-insensitive, the token exact (bearerToken).
		if tok, ok := bearerToken(r.Header); ok && valid(tok) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="riverbank"`)
		detail := "missing bearer token"
		if authz != "" {
			detail = "invalid credentials"
		}
		writeProblem(w, newProblem(http.StatusUnauthorized, riverbank.EUNAUTHORIZED, detail))
	})
}

// bodyLimit is the largest body r may send: MaxBatchBodyBytes for
// POST /v1/batches (exactly that path), MaxBodyBytes for everything else.
func bodyLimit(r *http.Request) int64 {
	if r.Method == http.MethodPost && r.URL.Path == "/v1/batches" {
		return MaxBatchBodyBytes
	}
	return MaxBodyBytes
}

func limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := bodyLimit(r)
		if r.Body != nil && r.ContentLength > limit {
			writeProblem(w, newProblem(http.StatusRequestEntityTooLarge, "request_too_large", fmt.Sprintf("request body exceeds %d bytes", limit)))
			return
		}
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		next.ServeHTTP(w, r)
	})
}

// withDeadline gives every request's context a deadline of d, so a
// request waiting on a database that does not answer (down without a
// reset, or saturated) ends and answers 503 database_unavailable instead
// of hanging: pgx and the pool honour the context. A long-poll of the
// events feed gets its wait (at most events.MaxWait) on top.
func withDeadline(d time.Duration, next http.Handler) http.Handler {
	if d <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := d
		if r.URL.Path == "/v1/events" {
			limit += events.MaxWait
		}
		ctx, cancel := context.WithTimeout(r.Context(), limit)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// accessLog logs every request: debug for successes (the hot path must not
// pay for a log line per request at info), info for client errors, error
// for server errors, and warn for 503 (the process is fine, a dependency
// is not: during a database outage the outage itself is logged once by
// internal/dbhealth, which also holds back these repeats).
func accessLog(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		level := slog.LevelDebug
		switch {
		case rec.status == http.StatusServiceUnavailable:
			level = slog.LevelWarn
		case rec.status >= 500:
			level = slog.LevelError
		case rec.status >= 400:
			level = slog.LevelInfo
		}
		if !logger.Enabled(r.Context(), level) {
			return
		}
		logger.Log(r.Context(), level, "http request",
			"method", r.Method, "path", r.URL.Path, "route", r.Pattern, "status", rec.status,
			"bytes", rec.bytes, "duration_ms", float64(time.Since(start).Microseconds())/1000, "remote", r.RemoteAddr)
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func recoverer(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				logger.Error("panic serving request", "path", r.URL.Path, "panic", v, "stack", string(debug.Stack()))
				writeProblem(w, newProblem(http.StatusInternalServerError, riverbank.EINTERNAL, "internal error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// allowedMethods lists the methods that have a route (other than the
// catch-all) for r's path.
func allowedMethods(mux *http.ServeMux, r *http.Request) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if m == r.Method {
			continue
		}
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
			out = append(out, m)
		}
	}
	return out
}
