package main

// Security tests against the real `riverbank serve` (docs/security.md):
// every operation of the served OpenAPI document refuses bad credentials
// and writes nothing, public routes stay public, tokens never reach the
// logs, header and body limits, and slow clients are disconnected while
// everyone else is served.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"riverbank/internal/testdb"
)

// securityEnv is serveEnv with the automatic close of business off, so no
// periodic job writes application tables while a test counts their rows.
func securityEnv(dbURL string) map[string]string {
	env := serveEnv(dbURL)
	env["RIVERBANK_COB_SCHEDULE"] = "off"
	return env
}

// tableCounts counts the rows of every application table (River's own
// tables change with River's maintenance and are left out).
func tableCounts(t *testing.T, pool *pgxpool.Pool) map[string]int64 {
	t.Helper()
	ctx := context.Background()
	rows, err := pool.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'river\_%' ORDER BY 1`)
	require.NoError(t, err)
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.NotEmpty(t, names)
	out := map[string]int64{}
	for _, name := range names {
		var n int64
		require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{name}.Sanitize()).Scan(&n))
		out[name] = n
	}
	return out
}

// operation is one operation of the served OpenAPI document.
type operation struct{ method, path string }

// servedOperations reads /openapi.json from the running server (with
// encoding/json: nothing here depends on an OpenAPI library) and returns
// every operation under /v1, path parameters filled with "1" (auth comes
// before routing, so their values do not matter).
func servedOperations(t *testing.T, b *testBundle) []operation {
	t.Helper()
	resp, body := b.get(t, "/openapi.json")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(body, &doc))
	param := regexp.MustCompile(`\{[^}]+\}`)
	var ops []operation
	for path, item := range doc.Paths {
		if !strings.HasPrefix(path, "/v1/") {
			continue
		}
		for method := range item {
			m := strings.ToUpper(method)
			switch m {
			case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
				ops = append(ops, operation{m, param.ReplaceAllString(path, "1")})
			}
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].path+ops[i].method < ops[j].path+ops[j].method })
	return ops
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// credential is a way of presenting (or not) a token that must not pass.
type credential struct {
	name   string
	values []string // Authorization fields
	query  string   // appended to the URL
}

// badBearerCredentials must not pass on /v1 and /metrics. (A trailing space
// or tab is removed by HTTP itself before any handler sees the field, RFC
// 9110 §5.5; api's unit test covers those forms. A trailing non-breaking
// space travels, and is refused.)
func badBearerCredentials() []credential {
	return []credential{
		{name: "Missing"},
		{name: "WrongToken", values: []string{"Bearer wrong-token-0123456789abcdef"}},
		{name: "UpperCased", values: []string{"Bearer " + strings.ToUpper(testToken)}},
		{name: "TitleCased", values: []string{"Bearer " + strings.ToUpper(testToken[:1]) + testToken[1:]}},
		{name: "TrailingNBSP", values: []string{"Bearer " + testToken + "\u00a0"}},
		{name: "TrailingWord", values: []string{"Bearer " + testToken + " x"}},
		{name: "Prefix", values: []string{"Bearer " + testToken[:len(testToken)-1]}},
		{name: "Longer", values: []string{"Bearer " + testToken + "0"}},
		{name: "BasicScheme", values: []string{basicAuth("riverbank", testToken)}},
		{name: "BasicSchemeRawToken", values: []string{"Basic " + testToken}},
		{name: "BasicSchemeTokenAsUser", values: []string{basicAuth(testToken, "")}},
		{name: "TokenScheme", values: []string{"Token " + testToken}},
		{name: "NoScheme", values: []string{testToken}},
		{name: "NoSpace", values: []string{"Bearer" + testToken}},
		{name: "TwoFields", values: []string{"Bearer wrong-token-0123456789abcdef", "Bearer " + testToken}},
		{name: "TwoTokensInOneField", values: []string{"Bearer " + testToken + "," + otherToken}},
		{name: "QueryParameter", query: "access_token=" + testToken},
	}
}

// badUICredentials must not pass on /riverui/ (which also takes basic auth
// with the token as password). Basic credentials are base64, so a
// trailing space does reach the server here.
func badUICredentials() []credential {
	return []credential{
		{name: "Missing"},
		{name: "WrongPassword", values: []string{basicAuth("ops", "wrong-token-0123456789abcdef")}},
		{name: "UpperCasedPassword", values: []string{basicAuth("ops", strings.ToUpper(testToken))}},
		{name: "TrailingSpacePassword", values: []string{basicAuth("ops", testToken+" ")}},
		{name: "TrailingNewlinePassword", values: []string{basicAuth("ops", testToken+"\n")}},
		{name: "TokenAsUser", values: []string{basicAuth(testToken, "")}},
		{name: "UpperCasedBearer", values: []string{"Bearer " + strings.ToUpper(testToken)}},
		{name: "TrailingNBSPBearer", values: []string{"Bearer " + testToken + "\u00a0"}},
		{name: "TokenScheme", values: []string{"Token " + testToken}},
	}
}

// send makes one request with raw Authorization fields.
func (b *testBundle) send(t *testing.T, method, path string, c credential) (*http.Response, []byte) {
	t.Helper()
	url := b.baseURL + path
	if c.query != "" {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		url += sep + c.query
	}
	var body io.Reader
	if method == http.MethodPost || method == http.MethodPut || method == http.MethodPatch {
		body = strings.NewReader(`{}`)
	}
	req, err := http.NewRequest(method, url, body)
	require.NoError(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for _, v := range c.values {
		req.Header.Add("Authorization", v)
	}
	resp, err := b.client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, data
}

// TestAuthEveryOperation walks every /v1 operation of the served OpenAPI
// document, /metrics and the River UI with credentials that must not
// pass: each is 401 problem+json `unauthorized` with a WWW-Authenticate
// challenge, and no application table changes. Public routes answer
// without a token, and with a wrong one.
func TestAuthEveryOperation(t *testing.T) {
	t.Parallel()
	dbURL, pool := testdb.NewDB(t)
	b := startServer(t, securityEnv(dbURL))
	b.pool = pool

	ops := servedOperations(t, b)
	// The walk covers the API, not a stub of it.
	require.GreaterOrEqual(t, len(ops), 40, "operations in the served document: %v", ops)
	for _, want := range []operation{
		{http.MethodPost, "/v1/orders"}, {http.MethodPost, "/v1/journal-entries"}, {http.MethodPost, "/v1/loans"},
		{http.MethodPost, "/v1/loans/1/repayments"}, {http.MethodPost, "/v1/batches"}, {http.MethodPut, "/v1/cob-runs/1"},
		{http.MethodPost, "/v1/dead-letters/1/retry"}, {http.MethodDelete, "/v1/webhook-subscriptions/1"}, {http.MethodGet, "/v1/events"},
	} {
		require.Contains(t, ops, want)
	}
	targets := []struct {
		operation
		creds []credential
	}{}
	for _, op := range ops {
		targets = append(targets, struct {
			operation
			creds []credential
		}{op, badBearerCredentials()})
	}
	for _, op := range []operation{{http.MethodGet, "/metrics"}} {
		targets = append(targets, struct {
			operation
			creds []credential
		}{op, badBearerCredentials()})
	}
	for _, op := range []operation{{http.MethodGet, "/riverui/"}, {http.MethodGet, "/riverui/api/jobs?limit=1"}, {http.MethodPost, "/riverui/api/jobs/cancel"}} {
		targets = append(targets, struct {
			operation
			creds []credential
		}{op, badUICredentials()})
	}

	before := tableCounts(t, pool)
	requests := 0
	for _, tg := range targets {
		for _, c := range tg.creds {
			resp, body := b.send(t, tg.method, tg.path, c)
			requests++
			what := fmt.Sprintf("%s %s with %s", tg.method, tg.path, c.name)
			require.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s: %s", what, body)
			requireProblem(t, resp, body, http.StatusUnauthorized, "unauthorized")
			require.NotEmpty(t, resp.Header.Get("WWW-Authenticate"), what)
			require.Equal(t, "no-store", resp.Header.Get("Cache-Control"), what)
			require.NotContains(t, strings.ToLower(string(body)), strings.ToLower(testToken), what)
		}
	}
	t.Logf("%d operations, %d requests refused", len(targets), requests)
	require.Equal(t, before, tableCounts(t, pool), "a refused request writes nothing")

	t.Run("TheTokenPasses", func(t *testing.T) {
		// The same walk with the token is never 401: the refusals above
		// are the credentials', not the routes'.
		for _, op := range ops {
			resp, body := b.send(t, op.method, op.path, credential{values: []string{"Bearer " + testToken}})
			require.NotEqual(t, http.StatusUnauthorized, resp.StatusCode, "%s %s: %s", op.method, op.path, body)
			require.Less(t, resp.StatusCode, 500, "%s %s: %s", op.method, op.path, body)
		}
		resp, _ := b.send(t, http.MethodGet, "/metrics", credential{values: []string{"bearer " + otherToken}})
		require.Equal(t, http.StatusOK, resp.StatusCode)
		resp, _ = b.send(t, http.MethodGet, "/riverui/", credential{values: []string{basicAuth("ops", testToken)}})
		require.Equal(t, http.StatusOK, resp.StatusCode)
	})

	t.Run("PublicRoutesStayPublic", func(t *testing.T) {
		for _, path := range []string{"/healthz", "/readyz", "/openapi.json", "/openapi.yaml", "/docs"} {
			for _, c := range []credential{{name: "none"}, {name: "wrong", values: []string{"Bearer wrong-token-0123456789abcdef"}}} {
				resp, body := b.send(t, http.MethodGet, path, c)
				require.Equal(t, http.StatusOK, resp.StatusCode, "%s with %s: %s", path, c.name, body)
				require.Empty(t, resp.Header.Get("WWW-Authenticate"), path)
			}
		}
	})
}

// TestTokensNeverLogged runs authenticated and refused requests against a
// server logging at debug (every request is logged) and checks no token,
// in any case or encoding, appears in its output.
func TestTokensNeverLogged(t *testing.T) {
	t.Parallel()
	dbURL, _ := testdb.NewDB(t)
	env := securityEnv(dbURL)
	env["RIVERBANK_LOG_LEVEL"] = "debug"
	b := startServer(t, env)

	bearer := func(tok string) credential { return credential{values: []string{"Bearer " + tok}} }
	for _, r := range []struct {
		method, path string
		c            credential
	}{
		{http.MethodGet, "/v1/system/info", bearer(testToken)},
		{http.MethodGet, "/v1/system/info", bearer(otherToken)},
		{http.MethodPost, "/v1/accounts", bearer(testToken)},        // 422
		{http.MethodGet, "/v1/orders/424242", bearer(testToken)},    // 404
		{http.MethodGet, "/v1/no-such-route", bearer(testToken)},    // 404
		{http.MethodDelete, "/v1/system/info", bearer(testToken)},   // 405
		{http.MethodGet, "/v1/events?after=zzz", bearer(testToken)}, // 422
		{http.MethodGet, "/metrics", bearer(testToken)},
		{http.MethodGet, "/riverui/", credential{values: []string{basicAuth("ops", testToken)}}},
		{http.MethodGet, "/riverui/api/jobs?limit=1", credential{values: []string{basicAuth("ops", otherToken)}}},
		{http.MethodGet, "/v1/system/info", bearer(strings.ToUpper(testToken))},
		{http.MethodGet, "/v1/system/info", bearer(testToken + "x")},
		{http.MethodGet, "/v1/system/info", credential{values: []string{basicAuth(testToken, testToken)}}},
		{http.MethodGet, "/v1/system/info", credential{query: "token=" + testToken}},
		{http.MethodGet, "/riverui/", credential{values: []string{basicAuth(testToken, "wrong-password-0123456789")}}},
	} {
		b.send(t, r.method, r.path, r.c)
	}
	// A body over the limit and a header over the limit are logged too.
	resp, _ := b.do(t, http.MethodPost, "/v1/accounts", bytes.NewReader(bytes.Repeat([]byte("x"), 1<<20+1)), withBearer(testToken))
	require.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	resp, _ = b.do(t, http.MethodGet, "/v1/system/info", nil, withBearer(testToken), func(r *http.Request) { r.Header.Set("X-Pad", strings.Repeat("p", 100<<10)) })
	require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)

	_, err := b.proc.stop(t)
	require.NoError(t, err)
	logs := b.proc.stderr.String() + b.proc.stdout.String()
	// The requests were logged (debug logs every one), so the check below
	// looks at real access lines.
	require.GreaterOrEqual(t, strings.Count(logs, `"msg":"http request"`), 15, "logs:\n%s", logs)
	require.Contains(t, logs, `"status":401`)
	for _, tok := range []string{testToken, otherToken} {
		// The token in any case, base64 of basic credentials with it, or
		// a long piece of it.
		forms := []string{tok, strings.ToUpper(tok), base64.StdEncoding.EncodeToString([]byte("ops:" + tok)), base64.StdEncoding.EncodeToString([]byte(tok)), tok[:12]}
		for line := range strings.SplitSeq(logs, "\n") {
			for _, form := range forms {
				require.NotContains(t, line, form, "a log line shows a token")
			}
		}
	}
}

// TestRequestLimits: over the wire, a header block over 64 KiB is 431, a
// body over 1 MiB (16 MiB for POST /v1/batches) is 413 problem+json
// `request_too_large` whether its length is declared or chunked.
func TestRequestLimits(t *testing.T) {
	t.Parallel()
	dbURL, pool := testdb.NewDB(t)
	b := startServer(t, securityEnv(dbURL))

	t.Run("Headers", func(t *testing.T) {
		t.Parallel()
		pad := func(n int) reqOpt { return func(r *http.Request) { r.Header.Set("X-Pad", strings.Repeat("p", n)) } }
		resp, body := b.do(t, http.MethodGet, "/v1/system/info", nil, withBearer(testToken), pad(32<<10))
		require.Equal(t, http.StatusOK, resp.StatusCode, "32 KiB of headers is fine: %s", body)
		resp, _ = b.do(t, http.MethodGet, "/v1/system/info", nil, withBearer(testToken), pad(100<<10))
		require.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
		// The server is fine afterwards.
		resp, _ = b.get(t, "/healthz")
		require.Equal(t, http.StatusOK, resp.StatusCode)
	})

	t.Run("Bodies", func(t *testing.T) {
		t.Parallel()
		before := tableCounts(t, pool)
		for _, tc := range []struct {
			path  string
			limit int
		}{
			{"/v1/journal-entries", 1 << 20},
			{"/v1/orders", 1 << 20},
			{"/v1/batches", 16 << 20},
		} {
			// A JSON string just over the limit: the body is valid JSON up
			// to where it is cut.
			over := append(append([]byte(`{"description":"`), bytes.Repeat([]byte("d"), tc.limit)...), []byte(`"}`)...)
			for _, chunked := range []bool{false, true} {
				var body io.Reader = bytes.NewReader(over)
				if chunked {
					body = io.MultiReader(body) // hides the length: sent chunked
				}
				resp, data := b.do(t, http.MethodPost, tc.path, body, withBearer(testToken), func(r *http.Request) { r.Header.Set("Content-Type", "application/json") })
				p := requireProblem(t, resp, data, http.StatusRequestEntityTooLarge, "request_too_large")
				if !chunked {
					require.Contains(t, p.Detail, fmt.Sprint(tc.limit), "%s: %s", tc.path, data)
				}
			}
		}
		// A batch between the two limits is not too large.
		items := make([]string, 4000)
		for i := range items {
			items[i] = fmt.Sprintf(`{"idempotency_key":"k-%d","description":"%s","postings":[]}`, i, strings.Repeat("d", 400))
		}
		batch := `{"idempotency_key":"mid-size","operation":"journal_entry","items":[` + strings.Join(items, ",") + `]}`
		require.Greater(t, len(batch), 1<<20)
		resp, data := b.do(t, http.MethodPost, "/v1/batches", strings.NewReader(batch), withBearer(testToken), func(r *http.Request) { r.Header.Set("Content-Type", "application/json") })
		require.Equal(t, http.StatusAccepted, resp.StatusCode, "body: %.300s", data)
		after := tableCounts(t, pool)
		require.Equal(t, before["batch"]+1, after["batch"], "only the mid-size batch was stored")
	})
}

// slowConn is a client that never finishes its request.
type slowConn struct {
	conn   net.Conn
	closed chan time.Time // receives when the server closed the connection
	reply  chan []byte    // what the server sent before closing
}

// dialSlow opens a connection and sends first at once, then one byte of
// trickle every interval until the server closes the connection.
func dialSlow(t *testing.T, addr, first, trickle string, interval time.Duration) *slowConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	s := &slowConn{conn: conn, closed: make(chan time.Time, 1), reply: make(chan []byte, 1)}
	go func() {
		// The server closing the connection ends this read.
		data, _ := io.ReadAll(conn)
		s.reply <- data
		s.closed <- time.Now()
	}()
	go func() {
		if _, err := io.WriteString(conn, first); err != nil {
			return
		}
		for i := 0; i < len(trickle); i++ {
			time.Sleep(interval)
			if _, err := conn.Write([]byte{trickle[i]}); err != nil {
				return // closed by the server
			}
		}
	}()
	return s
}

// TestSlowClientsAreDisconnected (slowloris): connections that send their
// headers, or their body, a byte at a time, and one that sends nothing,
// are closed by the server within its timeouts (5 s for headers, 5 s for
// an operation's body), while ordinary requests keep being answered. The
// bounds are generous: the test asserts that the server closes them, not
// how fast.
func TestSlowClientsAreDisconnected(t *testing.T) {
	t.Parallel()
	dbURL, _ := testdb.NewDB(t)
	b := startServer(t, securityEnv(dbURL))
	addr := strings.TrimPrefix(b.baseURL, "http://")
	// Long enough never to finish at one byte per 100 ms within the bounds.
	pad := strings.Repeat("a", 2000)
	start := time.Now()

	var conns []*slowConn
	var kinds []string
	for range 20 {
		// Headers a byte at a time.
		conns = append(conns, dialSlow(t, addr, "", "GET /v1/system/info HTTP/1.1\r\nHost: riverbank\r\nX-Pad: "+pad, 100*time.Millisecond))
		kinds = append(kinds, "slow headers")
	}
	for range 5 {
		// Nothing at all after connecting.
		conns = append(conns, dialSlow(t, addr, "", "", 0))
		kinds = append(kinds, "silent")
	}
	for _, path := range []string{"/v1/journal-entries", "/v1/orders", "/v1/accounts"} {
		for range 5 {
			// Complete, authenticated headers, then the body a byte at a time.
			head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: riverbank\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", path, testToken)
			conns = append(conns, dialSlow(t, addr, head, `{"description":"`+pad, 100*time.Millisecond))
			kinds = append(kinds, "slow body to "+path)
		}
	}

	// Meanwhile the server answers everyone else.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var served, failed int
	var mu sync.Mutex
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, err := http.NewRequest(http.MethodGet, b.baseURL+"/v1/system/info", nil)
				if err != nil {
					panic(err)
				}
				withBearer(testToken)(req)
				resp, err := b.client.Do(req)
				ok := err == nil && resp.StatusCode == http.StatusOK
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
				}
				mu.Lock()
				if ok {
					served++
				} else {
					failed++
				}
				mu.Unlock()
				time.Sleep(50 * time.Millisecond)
			}
		})
	}

	bound := 5*time.Second + 25*time.Second
	for i, c := range conns {
		select {
		case at := <-c.closed:
			reply := <-c.reply
			if strings.HasPrefix(kinds[i], "slow body") {
				// The operation gives up on the body with a 408 problem.
				require.True(t, bytes.HasPrefix(reply, []byte("HTTP/1.1 408 ")), "%s: %q", kinds[i], reply)
				require.Contains(t, string(reply), `"code":"request_timeout"`)
			} else {
				// net/http hangs up on an unfinished request line/headers.
				require.NotContains(t, string(reply), "HTTP/1.1 200", kinds[i])
			}
			t.Logf("%s closed after %s", kinds[i], at.Sub(start).Round(100*time.Millisecond))
		case <-time.After(time.Until(start.Add(bound))):
			t.Fatalf("%s: the server kept the connection open for %s", kinds[i], bound)
		}
	}
	close(stop)
	wg.Wait()
	require.Zero(t, failed, "ordinary requests failed while slow clients were connected")
	require.Positive(t, served)
	t.Logf("%d ordinary requests served meanwhile", served)

	resp, _ := b.get(t, "/healthz")
	require.Equal(t, http.StatusOK, resp.StatusCode)
}
