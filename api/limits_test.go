package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/api"
	"riverbank/internal/config"
	"riverbank/internal/events"
	"riverbank/internal/metrics"
	"riverbank/internal/testkit"
)

const limitsToken = "limits-test-token-0123456789"

// limitsBundle is the whole handler (NewHandler) behind a real
// http.Server (NewHTTPServer) on 127.0.0.1:0, on a database of the test's
// own, with limits of the test's choosing.
type limitsBundle struct {
	*testkit.Bundle
	url    string
	client *http.Client
}

func setupLimits(t *testing.T, l api.Limits) *limitsBundle {
	t.Helper()
	k := testkit.DB(t, testkit.DBOptions{Configure: func(cfg *config.Config) { cfg.APITokens = []string{limitsToken} }})
	h := api.NewHandler(api.HandlerOpts{
		Services: &api.Services{Services: k.Services, River: k.Inserter},
		Metrics:  metrics.New(k.Store.Queries(), slog.New(slog.DiscardHandler)),
		Ready:    func(context.Context) error { return nil },
		Limits:   l,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	srv := api.NewHTTPServer("", h, l, nil)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	transport := &http.Transport{}
	t.Cleanup(transport.CloseIdleConnections)
	return &limitsBundle{Bundle: k, url: "http://" + ln.Addr().String(), client: &http.Client{Transport: transport, Timeout: 3 * time.Minute}}
}

func (b *limitsBundle) do(t *testing.T, method, path string, body io.Reader) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, b.url+path, body)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+limitsToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, data
}

func requireHTTPProblem(t *testing.T, resp *http.Response, body []byte, status int, code string) api.Problem {
	t.Helper()
	require.Equal(t, status, resp.StatusCode, "body: %s", body)
	require.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
	var p api.Problem
	require.NoError(t, json.Unmarshal(body, &p), "body: %s", body)
	require.Equal(t, code, p.Code, "body: %s", body)
	testkit.RequireNoLeak(t, string(body))
	return p
}

// TestDefaultLimits: the figures docs/security.md states, and the rule
// that a long-poll fits in the write and handler deadlines.
func TestDefaultLimits(t *testing.T) {
	t.Parallel()
	l := api.DefaultLimits
	require.Equal(t, 64<<10, l.MaxHeaderBytes)
	require.Equal(t, 5*time.Second, l.ReadHeaderTimeout)
	require.Equal(t, 30*time.Second, l.ReadTimeout)
	require.Equal(t, 60*time.Second, l.WriteTimeout)
	require.Equal(t, 55*time.Second, l.HandlerTimeout)
	require.Equal(t, 120*time.Second, l.IdleTimeout)
	require.Greater(t, l.HandlerTimeout, events.MaxWait+10*time.Second, "a long-poll and the reads around it fit in the handler deadline")
	require.Less(t, l.HandlerTimeout, l.WriteTimeout, "a timed-out handler can still send its 503")

	srv := api.NewHTTPServer(":0", http.NotFoundHandler(), api.Limits{}, nil)
	require.Equal(t, l.MaxHeaderBytes, srv.MaxHeaderBytes)
	require.Equal(t, l.ReadHeaderTimeout, srv.ReadHeaderTimeout)
	require.Equal(t, l.ReadTimeout, srv.ReadTimeout)
	require.Equal(t, l.WriteTimeout, srv.WriteTimeout)
	require.Equal(t, l.IdleTimeout, srv.IdleTimeout)
}

// TestLongPollOutlivesReadTimeout: GET /v1/events?wait= keeps waiting past
// the server's ReadTimeout (net/http drops the read deadline once a
// request without a body is read) and answers 200 with an empty page.
func TestLongPollOutlivesReadTimeout(t *testing.T) {
	t.Parallel()
	b := setupLimits(t, api.Limits{ReadHeaderTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: 30 * time.Second, HandlerTimeout: 25 * time.Second})
	start := time.Now()
	resp, body := b.do(t, http.MethodGet, "/v1/events?wait=3s", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.GreaterOrEqual(t, time.Since(start), 3*time.Second, "the long-poll waited out its wait")
	var page struct {
		Events []json.RawMessage `json:"events"`
	}
	require.NoError(t, json.Unmarshal(body, &page))
	require.Empty(t, page.Events)
}

// TestHandlerTimeoutIs503: a request that runs out of its HandlerTimeout
// is 503 unavailable (not a 500, not database_unavailable) and writes
// nothing.
func TestHandlerTimeoutIs503(t *testing.T) {
	t.Parallel()
	b := setupLimits(t, api.Limits{HandlerTimeout: time.Nanosecond})
	resp, body := b.do(t, http.MethodGet, "/v1/accounts", nil)
	p := requireHTTPProblem(t, resp, body, http.StatusServiceUnavailable, "unavailable")
	require.Contains(t, p.Detail, "did not complete in time")

	resp, body = b.do(t, http.MethodPost, "/v1/accounts", strings.NewReader(`{"code":"cash:t","name":"Cash","type":"ASSET","currency":"EUR"}`))
	requireHTTPProblem(t, resp, body, http.StatusServiceUnavailable, "unavailable")
	require.Zero(t, b.Count(t, "SELECT count(*) FROM ledger_account WHERE code = 'cash:t'"))
}

// slowBody sends head, waits pause, then sends tail: a client on a slow
// link.
func slowBody(head, tail string, pause time.Duration) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		_, _ = io.WriteString(pw, head)
		time.Sleep(pause)
		_, _ = io.WriteString(pw, tail)
		_ = pw.Close()
	}()
	return pr
}

// TestBodyReadTimeouts: an ordinary body that takes longer than huma's
// 5 s body deadline is 408 request_timeout and writes nothing; a batch
// body may take BatchBodyReadTimeout, so the same pause is accepted there.
func TestBodyReadTimeouts(t *testing.T) {
	t.Parallel()
	b := setupLimits(t, api.DefaultLimits)
	cash, rev := "cash:"+b.Suffix, "revenue:"+b.Suffix
	for code, typ := range map[string]string{cash: "ASSET", rev: "INCOME"} {
		resp, body := b.do(t, http.MethodPost, "/v1/accounts", strings.NewReader(fmt.Sprintf(`{"code":%q,"name":"x","type":%q,"currency":"EUR"}`, code, typ)))
		require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", body)
	}
	entry := fmt.Sprintf(`{"idempotency_key":"slow-1","postings":[{"account":%q,"amount_minor":5},{"account":%q,"amount_minor":-5}]}`, cash, rev)
	pause := 7 * time.Second

	t.Run("OrdinaryBodyTooSlow", func(t *testing.T) {
		t.Parallel()
		resp, body := b.do(t, http.MethodPost, "/v1/journal-entries", slowBody(entry[:10], entry[10:], pause))
		requireHTTPProblem(t, resp, body, http.StatusRequestTimeout, "request_timeout")
		require.Zero(t, b.Count(t, "SELECT count(*) FROM ledger_entry"))
	})

	t.Run("BatchBodyMayTakeLonger", func(t *testing.T) {
		t.Parallel()
		batch := fmt.Sprintf(`{"idempotency_key":"slow-batch","operation":"journal_entry","items":[%s]}`, entry)
		resp, body := b.do(t, http.MethodPost, "/v1/batches", slowBody(batch[:10], batch[10:], pause))
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %s", body)
		require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM batch_item"))
	})
}

// TestSlowHandlerKeepsItsConnection: a request whose body is read at once
// but whose handler then runs longer than the 5 s body deadline (here: it
// waits on a table lock for 7 s) completes, and the keep-alive connection
// serves the next request. A body deadline left armed after the body was
// read fires in net/http's background read, cancels the handler's context
// and closes the connection (this failed before readBodyFirst).
func TestSlowHandlerKeepsItsConnection(t *testing.T) {
	t.Parallel()
	b := setupLimits(t, api.DefaultLimits)
	// Open the connection the slow request will reuse.
	resp, body := b.do(t, http.MethodGet, "/v1/accounts?limit=1", nil)
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)

	tx, err := b.Pool.Begin(b.Ctx)
	require.NoError(t, err)
	_, err = tx.Exec(b.Ctx, "LOCK TABLE ledger_account IN SHARE MODE")
	if err != nil {
		_ = tx.Rollback(b.Ctx)
		require.NoError(t, err)
	}
	hold := 7 * time.Second
	released := make(chan struct{})
	go func() {
		defer close(released)
		time.Sleep(hold)
		_ = tx.Rollback(b.Ctx)
	}()
	defer func() { <-released }()

	var reused []bool
	do := func(method, path, payload string) (*http.Response, []byte) {
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = append(reused, i.Reused) }}
		var r io.Reader
		if payload != "" {
			r = strings.NewReader(payload)
		}
		req, err := http.NewRequestWithContext(httptrace.WithClientTrace(b.Ctx, trace), method, b.url+path, r)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+limitsToken)
		if payload != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := b.client.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		data, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, data
	}
	start := time.Now()
	code := "cash:slow-" + b.Suffix
	resp, body = do(http.MethodPost, "/v1/accounts", fmt.Sprintf(`{"code":%q,"name":"Slow","type":"ASSET","currency":"EUR"}`, code))
	require.Equal(t, http.StatusCreated, resp.StatusCode, "body: %s", body)
	require.GreaterOrEqual(t, time.Since(start), hold-time.Second, "the request waited on the lock")
	resp, body = do(http.MethodGet, "/v1/accounts/"+code, "")
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", body)
	require.Equal(t, []bool{true, true}, reused, "both requests went over the first request's connection")
}
