package api

import (
	"context"
	"errors"
	"log"
	"net/http"
	"time"
)

// Limits bound what one client can make a server hold: header bytes, and
// how long it may take to send its request and to receive the answer. They
// are what a slow or hostile client (slowloris: headers or a body sent a
// byte at a time, or a response never read) runs into.
//
// Body sizes are limited separately (MaxBodyBytes, MaxBatchBodyBytes), and
// so is how long a body may take once an operation starts reading it: huma's
// per-operation BodyReadTimeout, 5 s by default and BatchBodyReadTimeout
// for POST /v1/batches.
type Limits struct {
	// MaxHeaderBytes bounds the request line and headers (Go adds 4 KiB of
	// slack). A larger request is answered 431 by net/http itself.
	MaxHeaderBytes int
	// ReadHeaderTimeout bounds the request line and headers, from the
	// first byte of a request; a client still sending them is
	// disconnected.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds the whole request, headers and body, for handlers
	// that do not set their own body deadline (huma operations do, see
	// above). It does not cut long-polls: net/http drops the read deadline
	// once the body has been read, and GET /v1/events?wait= has none.
	ReadTimeout time.Duration
	// WriteTimeout bounds the time from the end of the headers to the end
	// of the response, so a client that does not read its answer is
	// disconnected. It must exceed the longest long-poll (events.MaxWait,
	// 30 s) plus the reads around it.
	WriteTimeout time.Duration
	// HandlerTimeout is the deadline of a request's context: work stops
	// (and its transaction rolls back) a little before WriteTimeout, when
	// its answer could no longer be delivered, and the client gets 503
	// instead of nothing.
	HandlerTimeout time.Duration
	// IdleTimeout closes a keep-alive connection with no request in
	// flight. It should exceed the idle timeout of a load balancer in
	// front (60 s on common ones), so the balancer closes first.
	IdleTimeout time.Duration
}

// DefaultLimits are the limits of `riverbank serve`.
var DefaultLimits = Limits{
	MaxHeaderBytes:    64 << 10,
	ReadHeaderTimeout: 5 * time.Second,
	ReadTimeout:       30 * time.Second,
	WriteTimeout:      60 * time.Second,
	HandlerTimeout:    55 * time.Second,
	IdleTimeout:       120 * time.Second,
}

// BatchBodyReadTimeout is how long POST /v1/batches may take to send its
// body (up to MaxBatchBodyBytes, 16 MiB: about 1.1 Mbit/s at worst). That
// request's write and handler deadlines are extended by as much.
const BatchBodyReadTimeout = 2 * time.Minute

// withDefaults fills the zero fields from DefaultLimits.
func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxHeaderBytes > 0 {
		d.MaxHeaderBytes = l.MaxHeaderBytes
	}
	if l.ReadHeaderTimeout > 0 {
		d.ReadHeaderTimeout = l.ReadHeaderTimeout
	}
	if l.ReadTimeout > 0 {
		d.ReadTimeout = l.ReadTimeout
	}
	if l.WriteTimeout > 0 {
		d.WriteTimeout = l.WriteTimeout
	}
	if l.HandlerTimeout > 0 {
		d.HandlerTimeout = l.HandlerTimeout
	}
	if l.IdleTimeout > 0 {
		d.IdleTimeout = l.IdleTimeout
	}
	return d
}

// NewHTTPServer returns the http.Server for h (NewHandler) with limits l
// (zero fields: DefaultLimits). errorLog receives net/http's own errors
// (nil: the log package's default logger).
func NewHTTPServer(addr string, h http.Handler, l Limits, errorLog *log.Logger) *http.Server {
	l = l.withDefaults()
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		ErrorLog:          errorLog,
	}
}

// isBatchSubmit reports whether r is POST /v1/batches, the one request
// allowed a 16 MiB body and the time to send it.
func isBatchSubmit(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Path == "/v1/batches"
}

// errHandlerDeadline is the cause of a request context ended by
// HandlerTimeout (problemFrom answers it 503 unavailable; a request that
// ran out of RIVERBANK_REQUEST_TIMEOUT waiting on the database is 503
// database_unavailable).
var errHandlerDeadline = errors.New("handler deadline passed")

// withDeadlines gives every request's context the HandlerTimeout deadline
// and, for a batch submission, extends the write deadline net/http set
// from WriteTimeout by BatchBodyReadTimeout (the body alone may take that
// long).
func withDeadlines(l Limits, next http.Handler) http.Handler {
	l = l.withDefaults()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		budget := l.HandlerTimeout
		if isBatchSubmit(r) {
			budget += BatchBodyReadTimeout
			// Not every ResponseWriter supports deadlines (a test
			// recorder does not); the context deadline still holds.
			_ = http.NewResponseController(w).SetWriteDeadline(start.Add(l.WriteTimeout + BatchBodyReadTimeout))
		}
		ctx, cancel := context.WithDeadlineCause(r.Context(), start.Add(budget), errHandlerDeadline)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}
