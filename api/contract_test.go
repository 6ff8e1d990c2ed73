package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"riverbank/api"
	"riverbank/internal/config"
	"riverbank/internal/db"
	"riverbank/internal/domains"
	"riverbank/internal/metrics"
	"riverbank/internal/testkit"
	"riverbank/jobs"
)

// TestOpenAPIContract walks every operation of the OpenAPI document the
// server publishes (/openapi.json, fetched over HTTP from the real handler
// on a socket) and answers each with one valid request (and, for a create,
// its replay) and a few hundred hostile ones generated from the
// operation's schema (contract_gen_test.go). Every answer, good or bad:
//
//   - is not a 5xx, and shows no internal text (SQL, driver or Go errors,
//     stacks, file paths);
//   - validates against the published document, in its OpenAPI 3.1 form
//     and in the 3.0 form clients are generated from (kin-openapi's
//     openapi3filter.ValidateResponse, undocumented statuses refused);
//   - when it is a problem, carries a `code` the document lists for that
//     status (x-problem-codes);
//   - when it is a refusal (4xx), writes no row in any table, application
//     or River's (a trigger on every table counts committed row writes;
//     the count must not move).
//
// Text that breaks the text rule (invalid UTF-8, lone surrogates, NUL), in
// any body field or parameter, must be 422 validation_failed naming the
// field (except inside a batch's items, where it fails the item alone);
// missing or wrong credentials 401; a body of another content type 415; a
// body over the limit 413.
//
// No River worker runs while the walk does (jobs the requests insert stay
// available), so the tables change only by the requests themselves; the
// world the valid requests need (closed business dates, a collection case,
// a FAILED run, dead letters) is built first with workers, which are then
// stopped.
func TestOpenAPIContract(t *testing.T) {
	t.Parallel()
	c := setupContract(t)
	c.buildWorld(t)

	// Every operation the document publishes has a valid request here,
	// and every valid request here is an operation of the document.
	ops := c.operations()
	var inDoc []string
	for id := range ops {
		inDoc = append(inDoc, id)
	}
	var known []string
	for id := range validRequests {
		known = append(known, id)
	}
	sort.Strings(inDoc)
	sort.Strings(known)
	require.Equal(t, inDoc, known, "every operation of the document needs a valid request in validRequests, and only those")
	require.GreaterOrEqual(t, len(inDoc), 45)

	for _, id := range inDoc {
		t.Run(id, func(t *testing.T) {
			c.resync(t)
			c.walk(t, ops[id])
		})
	}

	// With Postgres unreachable, every operation's valid request answers
	// 503 database_unavailable, as documented.
	down := c.unreachableDatabase(t)
	for _, id := range inDoc {
		t.Run("database down/"+id, func(t *testing.T) {
			c.resync(t)
			r := c.request(ops[id], validRequests[id](c, t))
			r.server = down
			c.do(t, "database down", r, expect{statuses: []int{http.StatusServiceUnavailable}, code: "database_unavailable"})
		})
	}
	var statuses []string
	for s, n := range c.statuses {
		statuses = append(statuses, fmt.Sprintf("%d×%d", s, n))
	}
	sort.Strings(statuses)
	t.Logf("%d requests over %d operations; answers by status: %s", c.requests, len(inDoc), strings.Join(statuses, " "))
}

const contractToken = "contract-token-0123456789abcdef"

// contract is the walk's state: the server, the published documents, the
// world's resources and the count of rows written.
type contract struct {
	k      *testkit.Bundle
	base   string
	client *http.Client
	doc31  *openapi3.T
	doc30  *openapi3.T
	// counting is set once every table counts its writes (countWrites);
	// written is the count after the last request.
	counting bool
	written  int64
	n        int
	requests int
	statuses map[int]int
	today    time.Time

	cash, rev, sku, borrower string
	entryID, orderID, loanID int64
	caseID, batchID, subID   int64
	deadLetters              []int64
	cobDay, failedDay        string
}

// operation is one operation of the published document.
type operation struct {
	id, method, tmpl string
	op31             *openapi3.Operation
}

func setupContract(t *testing.T) *contract {
	t.Helper()
	k := testkit.DB(t, testkit.DBOptions{Configure: func(cfg *config.Config) {
		cfg.APITokens = []string{contractToken}
		cfg.WebhookAllowPrivate = true
	}})
	h := api.NewHandler(api.HandlerOpts{
		Services: &api.Services{Services: k.Services, River: k.Inserter, Migrator: mustMigrator(t, k)},
		Metrics:  metrics.New(k.Store.Queries(), slog.New(slog.DiscardHandler)),
		Ready:    func(context.Context) error { return nil },
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	// Redirects are answers too: a client that followed one would check
	// another operation's answer against this one's schema.
	client := &http.Client{Timeout: 2 * time.Minute, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	c := &contract{k: k, base: srv.URL, client: client, statuses: map[int]int{},
		today: time.Now().UTC().Truncate(24 * time.Hour)}
	c.doc31 = c.loadDoc(t, "/openapi.json", "3.1")
	c.doc30 = c.loadDoc(t, "/openapi-3.0.json", "3.0")

	return c
}

// unreachableDatabase serves the same API on services whose pool points
// at a port nothing listens on, and returns its URL.
func (c *contract) unreachableDatabase(t *testing.T) string {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), "postgres://postgres@127.0.0.1:1/none?sslmode=disable&connect_timeout=2")
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	cfg := testkit.Config(t)
	cfg.APITokens = []string{contractToken}
	cfg.WebhookAllowPrivate = true
	logger := slog.New(slog.DiscardHandler)
	inserter, err := jobs.NewClient(pool, cfg, logger, nil)
	require.NoError(t, err)
	store := db.NewStore(pool, inserter)
	m, err := db.NewMigrator(pool)
	require.NoError(t, err)
	h := api.NewHandler(api.HandlerOpts{
		Services: &api.Services{Services: domains.New(cfg, logger, store), River: inserter, Migrator: m},
		Metrics:  metrics.New(store.Queries(), logger),
		Ready:    func(context.Context) error { return nil },
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL
}

func mustMigrator(t *testing.T, k *testkit.Bundle) *db.Migrator {
	t.Helper()
	m, err := db.NewMigrator(k.Pool)
	require.NoError(t, err)
	return m
}

func (c *contract) loadDoc(t *testing.T, path, version string) *openapi3.T {
	t.Helper()
	resp, err := c.client.Get(c.base + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(data)
	require.NoError(t, err, path)
	require.True(t, strings.HasPrefix(doc.OpenAPI, version), "%s is OpenAPI %s", path, doc.OpenAPI)
	// A description next to a $ref is ignored by 3.0 tools, harmless.
	require.NoError(t, doc.Validate(context.Background(), openapi3.AllowExtraSiblingFields("description")), "%s is a valid OpenAPI document", path)
	return doc
}

func (c *contract) operations() map[string]operation {
	out := map[string]operation{}
	for tmpl, item := range c.doc31.Paths.Map() {
		for method, op := range item.Operations() {
			out[op.OperationID] = operation{id: op.OperationID, method: method, tmpl: tmpl, op31: op}
		}
	}
	return out
}

// countWrites puts on every table of the database, River's included, a
// row trigger that counts the rows written in contract_writes, in the
// writing transaction: the count moves exactly when a transaction that
// wrote a row commits, so a request wrote nothing iff the count did not
// move. Installed once no worker runs (the one counter row would make
// concurrent writers wait on each other); a row trigger on a partitioned
// table covers its partitions, present and future.
func (c *contract) countWrites(t *testing.T) {
	t.Helper()
	ctx := c.k.Ctx
	_, err := c.k.Pool.Exec(ctx, `CREATE TABLE contract_writes (n bigint NOT NULL);
		INSERT INTO contract_writes VALUES (0);
		CREATE FUNCTION contract_count_write() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN UPDATE contract_writes SET n = n + 1; RETURN NULL; END $$`)
	require.NoError(t, err)
	rows, err := c.k.Pool.Query(ctx, `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname <> 'contract_writes' ORDER BY 1`)
	require.NoError(t, err)
	var tables []string
	for rows.Next() {
		var name string
		require.NoError(t, rows.Scan(&name))
		tables = append(tables, name)
	}
	require.NoError(t, rows.Err())
	require.Contains(t, tables, "river_job")
	require.Greater(t, len(tables), 10)
	for _, table := range tables {
		_, err := c.k.Pool.Exec(ctx, fmt.Sprintf(`CREATE TRIGGER contract_count_write AFTER INSERT OR UPDATE OR DELETE ON %q
			FOR EACH ROW EXECUTE FUNCTION contract_count_write()`, table))
		require.NoError(t, err)
	}
	c.counting = true
	c.written = c.writes(t)
}

// resync starts a case from the current count, so that a case that failed
// between a setup write and its bookkeeping does not fail every case after
// it; writes within the case are still checked.
func (c *contract) resync(t *testing.T) {
	t.Helper()
	if c.counting {
		c.written = c.writes(t)
	}
}

// writes is the number of rows written since countWrites.
func (c *contract) writes(t *testing.T) int64 {
	t.Helper()
	var n int64
	require.NoError(t, c.k.Pool.QueryRow(c.k.Ctx, `SELECT n FROM contract_writes`).Scan(&n))
	return n
}

func (c *contract) next() int { c.n++; return c.n }

// request is one request of the walk.
type request struct {
	// server is the base URL to send to (the walk's server when empty).
	server string
	method string
	tmpl   string            // the operation's path template
	params map[string]string // path parameters, escaped
	query  string            // raw query
	// auth is the Authorization header; nil sends the valid token.
	auth        *string
	contentType string
	body        []byte
	hasBody     bool
	// chunked sends the body without a Content-Length.
	chunked bool
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r request) url(base string) string {
	path := r.tmpl
	for name, v := range r.params {
		path = strings.ReplaceAll(path, "{"+name+"}", v)
	}
	u := base + path
	if r.query != "" {
		u += "?" + r.query
	}
	return u
}

func (c *contract) send(t *testing.T, r request) (*http.Request, response) {
	t.Helper()
	var body io.Reader
	if r.hasBody {
		if r.chunked {
			body = io.MultiReader(bytes.NewReader(r.body)) // not a *bytes.Reader: no length
		} else {
			body = bytes.NewReader(r.body)
		}
	}
	base := c.base
	if r.server != "" {
		base = r.server
	}
	req, err := http.NewRequest(r.method, r.url(base), body)
	require.NoError(t, err, "%s %s", r.method, r.url(""))
	if r.chunked {
		req.ContentLength = -1
	}
	if r.auth == nil {
		req.Header.Set("Authorization", "Bearer "+contractToken)
	} else if *r.auth != "" {
		req.Header.Set("Authorization", *r.auth)
	}
	if r.hasBody {
		ct := r.contentType
		if ct == "" {
			ct = "application/json"
		}
		if ct != "-" {
			req.Header.Set("Content-Type", ct)
		}
	}
	resp, err := c.client.Do(req)
	require.NoError(t, err, "%s %s", r.method, r.url(""))
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	c.requests++
	c.statuses[resp.StatusCode]++
	return req, response{status: resp.StatusCode, header: resp.Header, body: data}
}

// expect is what a case requires beyond the checks every answer gets.
type expect struct {
	statuses []int
	code     string
	// field is the details.field the problem must name.
	field string
}

// leaks are texts that only internal errors contain; no payload the walk
// sends contains them.
var leaks = regexp.MustCompile(`(?i)SQLSTATE|\bpq:|pgx|pgconn|postgres|duplicate key|violates|relation "|syntax error at|runtime error|goroutine|panic|nil pointer|invalid memory|\.go:\d|/usr/local/go|/root/|riverbank/internal|riverbank error|unexpected error occurred`)

// do sends r and checks its answer (see TestOpenAPIContract); name says
// which case it is in failure messages.
func (c *contract) do(t *testing.T, name string, r request, e expect) response {
	t.Helper()
	req, resp := c.send(t, r)
	what := fmt.Sprintf("%s: %s %s → %d %s", name, r.method, truncate(r.url(""), 200), resp.status, truncate(string(resp.body), 600))

	if !slices.Contains(e.statuses, http.StatusServiceUnavailable) {
		require.Less(t, resp.status, 500, what)
	}
	if m := leaks.Find(withoutJobErrors(resp.body)); m != nil {
		require.Failf(t, "internal text in an answer", "%q in %s", m, what)
	}
	if len(e.statuses) > 0 {
		require.Contains(t, e.statuses, resp.status, what)
	}
	for _, d := range []struct {
		doc  *openapi3.T
		name string
	}{{c.doc31, "OpenAPI 3.1"}, {c.doc30, "OpenAPI 3.0"}} {
		require.NoError(t, validateAnswer(d.doc, r, req, resp), "%s: the answer does not match the published %s document", what, d.name)
	}
	if resp.status >= 400 {
		require.Equal(t, "application/problem+json", resp.header.Get("Content-Type"), what)
		var p api.Problem
		require.NoError(t, json.Unmarshal(resp.body, &p), what)
		require.Equal(t, resp.status, p.Status, what)
		item := c.doc31.Paths.Find(r.tmpl)
		docResp := item.GetOperation(r.method).Responses.Status(resp.status)
		require.NotNil(t, docResp, what)
		listed, _ := docResp.Value.Extensions[api.ProblemCodesExtension].([]any)
		require.Contains(t, listed, any(p.Code), "%s: code %q is not in %s of this status", what, p.Code, api.ProblemCodesExtension)
		if e.code != "" {
			require.Equal(t, e.code, p.Code, what)
		}
		if e.field != "" {
			require.Equal(t, e.field, p.Details["field"], what)
		}
		if c.counting {
			require.Equal(t, c.written, c.writes(t), "%s: a refused request wrote rows", what)
		}
	} else {
		if c.counting {
			c.written = c.writes(t)
		}
		// The server takes no request the document calls invalid (other
		// content types are the server's leniency, not the schema's).
		if r.contentType == "" && r.auth == nil {
			require.NoError(t, validateRequest(c.doc31, r), "%s: accepted, but the published document says the request is invalid", what)
		}
	}
	return resp
}

// jobErrorFields are the fields of successful answers that show operators
// what a job or a loan's close failed with (a COB run's failed_loans, a
// dead letter's errors, a webhook delivery's last_error): by design they
// may name a SQLSTATE, so the leak check skips them. A new webhook
// subscription's secret is random base64, which now and then spells one
// of the leak words ("PgX" failed a CI run), so it is skipped too.
var jobErrorFields = []string{"failed_loans", "errors", "last_error", "secret"}

// withoutJobErrors is a JSON body without jobErrorFields, at any depth, in
// a success answer; a problem is returned whole.
func withoutJobErrors(body []byte) []byte {
	var v any
	if json.Unmarshal(body, &v) != nil {
		return body
	}
	if m, ok := v.(map[string]any); ok && m["status"] != nil && m["code"] != nil && m["title"] != nil {
		return body // a problem: every field counts
	}
	var strip func(v any) any
	strip = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			for _, f := range jobErrorFields {
				delete(x, f)
			}
			for k, e := range x {
				x[k] = strip(e)
			}
		case []any:
			for i, e := range x {
				x[i] = strip(e)
			}
		}
		return v
	}
	out, err := json.Marshal(strip(v))
	if err != nil {
		return body
	}
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + fmt.Sprintf("…(%d bytes)", len(s))
}

// validateAnswer checks an answer against a published document with
// kin-openapi: its status must be documented, its body must match.
func validateAnswer(doc *openapi3.T, r request, req *http.Request, resp response) error {
	item := doc.Paths.Find(r.tmpl)
	if item == nil {
		return fmt.Errorf("no path %s", r.tmpl)
	}
	op := item.GetOperation(r.method)
	route := &routers.Route{Spec: doc, Path: r.tmpl, PathItem: item, Method: r.method, Operation: op}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, Route: route},
		Status:                 resp.status,
		Header:                 resp.header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(resp.body)
	return openapi3filter.ValidateResponse(context.Background(), in)
}

// validateRequest checks a request against a published document with
// kin-openapi (parameters and body; not credentials).
func validateRequest(doc *openapi3.T, r request) error {
	item := doc.Paths.Find(r.tmpl)
	if item == nil {
		return fmt.Errorf("no path %s", r.tmpl)
	}
	op := item.GetOperation(r.method)
	var body io.Reader
	if r.hasBody {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequest(r.method, r.url("http://riverbank.test"), body)
	if err != nil {
		return err
	}
	if r.hasBody {
		req.Header.Set("Content-Type", "application/json")
	}
	// allowEmptyValue says an empty value is taken as absent; kin-openapi
	// checks it against the schema still, so it is left out here.
	q := req.URL.Query()
	for _, p := range op.Parameters {
		if p.Value.In == "query" && p.Value.AllowEmptyValue && q.Has(p.Value.Name) && q.Get(p.Value.Name) == "" {
			q.Del(p.Value.Name)
		}
	}
	req.URL.RawQuery = q.Encode()
	params := map[string]string{}
	for k, v := range r.params {
		if params[k], err = url.PathUnescape(v); err != nil {
			return err
		}
	}
	return openapi3filter.ValidateRequest(context.Background(), &openapi3filter.RequestValidationInput{
		Request: req, PathParams: params, Route: &routers.Route{Spec: doc, Path: r.tmpl, PathItem: item, Method: r.method, Operation: op},
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, SkipSettingDefaults: true, MultiError: true},
	})
}

// call is an operation's valid request.
type call struct {
	params map[string]string
	query  url.Values
	body   any
	// want is the status the request answers; replay, when set, the
	// status of the same request sent again.
	want, replay int
}

func (c *contract) request(o operation, v call) request {
	r := request{method: o.method, tmpl: o.tmpl, params: v.params, query: v.query.Encode()}
	if v.body != nil {
		r.hasBody, r.body = true, encodeJSON(normalize(v.body))
	}
	return r
}

// walk answers one operation with its valid request and every hostile one.
func (c *contract) walk(t *testing.T, o operation) {
	v := validRequests[o.id](c, t)
	valid := c.request(o, v)
	for _, doc := range []*openapi3.T{c.doc31, c.doc30} {
		require.NoError(t, validateRequest(doc, valid), "the valid request of %s does not match the published OpenAPI %s document", o.id, doc.OpenAPI)
	}
	c.do(t, "valid request", valid, expect{statuses: []int{v.want}})
	if v.replay != 0 {
		c.do(t, "replay of the valid request", valid, expect{statuses: []int{v.replay}})
	}

	// Credentials.
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wrong-token", "Bearer " + contractToken + "x", "Basic " + "dXNlcjpwYXNz", "Token " + contractToken, contractToken} {
		r := valid
		r.auth = &auth
		c.do(t, fmt.Sprintf("Authorization %q", auth), r, expect{statuses: []int{http.StatusUnauthorized}, code: "unauthorized"})
	}

	// Parameters, one at a time.
	for _, p := range o.op31.Parameters {
		name := p.Value.Name
		switch p.Value.In {
		case "path":
			for _, pv := range paramValues {
				if pv.raw == "" {
					continue // an empty segment is another route
				}
				r := valid
				r.params = withParam(valid.params, name, pv.raw)
				c.do(t, "path "+name+" "+pv.name, r, expect{})
			}
			for _, pv := range textParamBreakers {
				r := valid
				r.params = withParam(valid.params, name, pv.raw)
				c.do(t, "path "+name+" "+pv.name, r, expect{statuses: []int{http.StatusUnprocessableEntity}, code: "validation_failed", field: name})
			}
		case "query":
			for _, pv := range paramValues {
				r := valid
				r.query = withQuery(v.query, name, pv.raw)
				c.do(t, "query "+name+" "+pv.name, r, expect{})
			}
			for _, pv := range textParamBreakers {
				r := valid
				r.query = withQuery(v.query, name, pv.raw)
				c.do(t, "query "+name+" "+pv.name, r, expect{statuses: []int{http.StatusUnprocessableEntity}, code: "validation_failed", field: name})
			}
			r := valid
			r.query = withQuery(v.query, name, "1") + "&" + url.QueryEscape(name) + "=2"
			c.do(t, "query "+name+" twice", r, expect{})
		}
	}
	r := valid
	r.query = strings.TrimPrefix(valid.query+"&zz_unknown=1", "&")
	c.do(t, "unknown query parameter", r, expect{})

	// An oversized body, on every operation: the limit is checked before
	// routing.
	limit := api.MaxBodyBytes
	if o.id == "create-batch" {
		limit = api.MaxBatchBodyBytes
	}
	huge := bytes.Repeat([]byte(" "), limit+1)
	copy(huge, "{}")
	r = valid
	r.hasBody, r.body, r.contentType = true, huge, ""
	c.do(t, "body over the limit", r, expect{statuses: []int{http.StatusRequestEntityTooLarge}, code: "request_too_large"})

	if o.op31.RequestBody == nil {
		require.Nil(t, v.body, "the operation takes no body")
		return
	}
	schema := o.op31.RequestBody.Value.Content.Get("application/json").Schema.Value
	r = valid
	r.chunked = true
	r.body = append(bytes.Repeat([]byte(" "), limit+1), valid.body...)
	c.do(t, "chunked body over the limit", r, expect{statuses: []int{http.StatusRequestEntityTooLarge}, code: "request_too_large"})

	for _, ct := range []string{"text/plain", "application/xml", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "text/json", "application/octet-stream"} {
		r := valid
		r.contentType = ct
		c.do(t, "content type "+ct, r, expect{statuses: []int{http.StatusUnsupportedMediaType}, code: "unsupported_media_type"})
	}
	r = valid
	r.contentType = "-"
	c.do(t, "no content type", r, expect{})
	r = valid
	r.contentType = "application/merge-patch+json; charset=utf-8"
	c.do(t, "a +json content type", r, expect{})

	for _, m := range malformedBodies {
		r := valid
		r.body = []byte(m.body)
		c.do(t, "malformed body: "+m.name, r, expect{statuses: []int{http.StatusBadRequest, http.StatusUnprocessableEntity}, code: "validation_failed"})
	}
	for _, bc := range bodyCases(normalize(v.body), schema) {
		r := valid
		r.body = encodeJSON(bc.body)
		e := expect{}
		switch {
		case bc.textField != "" && o.id == "create-batch" && strings.HasPrefix(bc.textField, "items["):
			// An item's text fails that item alone (the batch is created,
			// TestBatchesAPIItemTextFailsAlone); here the valid request
			// holds the key, so other items are another payload under it.
			e = expect{statuses: []int{http.StatusConflict}, code: "idempotency_conflict"}
		case bc.textField != "":
			e = expect{statuses: []int{http.StatusUnprocessableEntity}, code: "validation_failed", field: bc.textField}
		}
		c.do(t, "body "+bc.name, r, e)
	}
}

func withParam(params map[string]string, name, v string) map[string]string {
	out := map[string]string{}
	for k, x := range params {
		out[k] = x
	}
	out[name] = v
	return out
}

// withQuery is q with name set to raw (already escaped).
func withQuery(q url.Values, name, raw string) string {
	rest := url.Values{}
	for k, v := range q {
		if k != name {
			rest[k] = v
		}
	}
	s := rest.Encode()
	if s != "" {
		s += "&"
	}
	return s + url.QueryEscape(name) + "=" + raw
}

// mustDo sends a valid request of the world (checked like any other) and
// decodes its answer.
func (c *contract) mustDo(t *testing.T, method, tmpl string, params map[string]string, body any, want int) map[string]any {
	t.Helper()
	r := request{method: method, tmpl: tmpl, params: params}
	if body != nil {
		r.hasBody, r.body = true, encodeJSON(normalize(body))
	}
	resp := c.do(t, "world", r, expect{statuses: []int{want}})
	var out map[string]any
	if len(resp.body) > 0 {
		require.NoError(t, json.Unmarshal(resp.body, &out))
	}
	return out
}

func id(m map[string]any) int64 { return int64(m["id"].(float64)) }

func (c *contract) day(offset int) string { return c.today.AddDate(0, 0, offset).Format("2006-01-02") }

// buildWorld makes what the valid requests need. Close of business first,
// with the process's workers: dates 2024-07-01..03 closed, a loan overdue
// on 07-03 (its borrower's collection case), and 07-04 FAILED (a loan whose
// interest would overflow), so retry-failures has a run to retry. Then two
// dead letters, and the rest through the API with no worker running.
func (c *contract) buildWorld(t *testing.T) {
	t.Helper()
	ctx := c.k.Ctx
	c.mustDo(t, http.MethodPut, "/v1/credit-lines/{borrower_id}", map[string]string{"borrower_id": "walk-cob"},
		map[string]any{"limit_minor": 1_000_000_000, "currency": "CNY"}, http.StatusCreated)
	loan := func(no, start, due string) map[string]any {
		return map[string]any{"loan_no": no, "borrower_id": "walk-cob", "currency": "CNY", "principal_minor": 1_000_000, "annual_rate_bps": 1000,
			"penalty_rate_bps": 500, "late_fee_minor": 100, "start_date": start, "due_date": due, "interest_mode": "DEALER", "dealer_id": "walk-dealer"}
	}
	c.mustDo(t, http.MethodPost, "/v1/loans", nil, loan("walk-cob-1", "2024-07-01", "2024-07-02"), http.StatusCreated)
	bad := id(c.mustDo(t, http.MethodPost, "/v1/loans", nil, loan("walk-cob-2", "2024-07-01", "2024-12-31"), http.StatusCreated))

	workers := c.k.Client(t, func(reg *jobs.Registration) { reg.Periodic = nil })
	require.NoError(t, workers.Start(ctx))
	runStatus := func(date string) string {
		r := request{method: http.MethodGet, tmpl: "/v1/cob-runs/{date}", params: map[string]string{"date": date}}
		_, resp := c.send(t, r)
		require.Equal(t, http.StatusOK, resp.status, string(resp.body))
		var run api.COBRunBody
		require.NoError(t, json.Unmarshal(resp.body, &run))
		return run.Status
	}
	for _, date := range []string{"2024-07-01", "2024-07-02", "2024-07-03"} {
		_, resp := c.send(t, request{method: http.MethodPut, tmpl: "/v1/cob-runs/{date}", params: map[string]string{"date": date}})
		require.Equal(t, http.StatusAccepted, resp.status, string(resp.body))
		testkit.WaitFor(t, 30*time.Second, "run "+date, func() bool { return runStatus(date) == "COMPLETED" })
	}
	testkit.WaitFor(t, 30*time.Second, "walk-cob's collection case", func() bool {
		_, resp := c.send(t, request{method: http.MethodGet, tmpl: "/v1/cases", query: "borrower_id=walk-cob"})
		var page struct {
			Cases []api.CaseBody `json:"cases"`
		}
		require.NoError(t, json.Unmarshal(resp.body, &page))
		if len(page.Cases) == 0 {
			return false
		}
		c.caseID = page.Cases[0].ID
		return true
	})
	_, err := c.k.Pool.Exec(ctx, "UPDATE loan SET interest_outstanding_dealer_minor = $2 WHERE id = $1", bad, int64(math.MaxInt64-1))
	require.NoError(t, err)
	_, resp := c.send(t, request{method: http.MethodPut, tmpl: "/v1/cob-runs/{date}", params: map[string]string{"date": "2024-07-04"}})
	require.Equal(t, http.StatusAccepted, resp.status, string(resp.body))
	testkit.WaitFor(t, 30*time.Second, "run 2024-07-04 to fail", func() bool { return runStatus("2024-07-04") == "FAILED" })
	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	require.NoError(t, workers.Stop(stopCtx))
	c.cobDay, c.failedDay = "2024-07-01", "2024-07-04"

	for _, j := range c.k.WorkTestJobs(t, testkit.FailArgs{N: 1}, testkit.FailArgs{N: 2}) {
		require.Equal(t, "discarded", string(j.State))
		c.deadLetters = append(c.deadLetters, j.ID)
	}
	c.countWrites(t)

	c.cash, c.rev = "walk:cash", "walk:revenue"
	c.mustDo(t, http.MethodPost, "/v1/accounts", nil, map[string]any{"code": c.cash, "name": "Walk cash", "type": "ASSET", "currency": "CNY"}, http.StatusCreated)
	c.mustDo(t, http.MethodPost, "/v1/accounts", nil, map[string]any{"code": c.rev, "name": "Walk revenue", "type": "INCOME", "currency": "CNY"}, http.StatusCreated)
	c.entryID = id(c.mustDo(t, http.MethodPost, "/v1/journal-entries", nil, c.entry(), http.StatusCreated))
	c.sku = "WALK-SKU"
	c.mustDo(t, http.MethodPut, "/v1/products/{sku}", map[string]string{"sku": c.sku},
		map[string]any{"name": "Walk product", "price_minor": 100, "currency": "CNY", "stock": 100_000}, http.StatusCreated)
	c.orderID = c.newOrder(t, "")
	c.borrower = "walk-b1"
	c.mustDo(t, http.MethodPut, "/v1/credit-lines/{borrower_id}", map[string]string{"borrower_id": c.borrower},
		map[string]any{"limit_minor": 1_000_000_000_000, "currency": "CNY"}, http.StatusCreated)
	c.loanID = id(c.mustDo(t, http.MethodPost, "/v1/loans", nil, c.loan(), http.StatusCreated))
	c.mustDo(t, http.MethodPost, "/v1/loans/{id}/repayments", map[string]string{"id": fmt.Sprint(c.loanID)}, c.repayment(), http.StatusCreated)
	c.batchID = id(c.mustDo(t, http.MethodPost, "/v1/batches", nil, c.batch(), http.StatusAccepted))
	c.subID = id(c.mustDo(t, http.MethodPost, "/v1/webhook-subscriptions", nil, c.subscription(), http.StatusCreated))
}

func (c *contract) entry() map[string]any {
	return map[string]any{"idempotency_key": fmt.Sprintf("walk-je-%d", c.next()), "description": "walk entry", "urgent": false, "currency": "CNY",
		"postings": []map[string]any{{"account": c.cash, "amount_minor": 100}, {"account": c.rev, "amount_minor": -100}}}
}

func (c *contract) order() map[string]any {
	return map[string]any{"buyer_id": "walk-buyer", "merchant_id": "walk-m", "identifier": fmt.Sprintf("walk-o-%d", c.next()),
		"items": []map[string]any{{"sku": c.sku, "quantity": 1}}}
}

// newOrder places an order and takes it to status (CREATED when "").
func (c *contract) newOrder(t *testing.T, status string) int64 {
	t.Helper()
	o := id(c.mustDo(t, http.MethodPost, "/v1/orders", nil, c.order(), http.StatusCreated))
	p := map[string]string{"id": fmt.Sprint(o)}
	if status == "PAID" || status == "SHIPPED" {
		c.mustDo(t, http.MethodPost, "/v1/orders/{id}/pay", p, map[string]any{"payment_id": fmt.Sprintf("walk-pay-%d", c.next()), "amount_minor": 100}, http.StatusOK)
	}
	if status == "SHIPPED" {
		c.mustDo(t, http.MethodPost, "/v1/orders/{id}/ship", p, map[string]any{"tracking_no": "SF-WALK"}, http.StatusOK)
	}
	return o
}

func (c *contract) loan() map[string]any {
	return map[string]any{"loan_no": fmt.Sprintf("walk-L-%d", c.next()), "borrower_id": c.borrower, "currency": "CNY", "principal_minor": 1_000_000,
		"annual_rate_bps": 1000, "penalty_rate_bps": 500, "late_fee_minor": 100, "start_date": c.day(-3), "due_date": c.day(90),
		"interest_mode": "SPLIT", "dealer_id": "walk-dealer", "manufacturer_id": "walk-maker", "manufacturer_share_bps": 2500}
}

func (c *contract) repayment() map[string]any {
	return map[string]any{"identifier": fmt.Sprintf("walk-r-%d", c.next()), "payer": "DEALER", "amount_minor": 10, "value_date": c.day(0)}
}

func (c *contract) batch() map[string]any {
	return map[string]any{"idempotency_key": fmt.Sprintf("walk-b-%d", c.next()), "operation": "journal_entry", "items": []map[string]any{c.entry()}}
}

func (c *contract) subscription() map[string]any {
	return map[string]any{"url": "http://127.0.0.1:9/walk", "event_types": []string{"order.paid", "loan.repaid"}, "description": "walk"}
}

func idParam(v int64) map[string]string { return map[string]string{"id": fmt.Sprint(v)} }

// validRequests has one valid request per operation of the document.
var validRequests = map[string]func(c *contract, t *testing.T) call{
	"get-system-info": func(c *contract, t *testing.T) call { return call{want: 200} },
	"list-accounts":   func(c *contract, t *testing.T) call { return call{query: url.Values{"limit": {"5"}}, want: 200} },
	"create-account": func(c *contract, t *testing.T) call {
		return call{body: map[string]any{"code": fmt.Sprintf("walk:acct:%d", c.next()), "name": "Walk account", "type": "EXPENSE", "currency": "CNY"}, want: 201, replay: 200}
	},
	"get-account": func(c *contract, t *testing.T) call {
		return call{params: map[string]string{"code": url.PathEscape(c.cash)}, query: url.Values{"currency": {"CNY"}}, want: 200}
	},
	"list-account-postings": func(c *contract, t *testing.T) call {
		return call{params: map[string]string{"code": url.PathEscape(c.cash)}, query: url.Values{"currency": {"CNY"}, "limit": {"5"}}, want: 200}
	},
	"create-journal-entry": func(c *contract, t *testing.T) call { return call{body: c.entry(), want: 201, replay: 200} },
	"get-journal-entry":    func(c *contract, t *testing.T) call { return call{params: idParam(c.entryID), want: 200} },
	"get-trial-balance":    func(c *contract, t *testing.T) call { return call{want: 200} },
	"put-product": func(c *contract, t *testing.T) call {
		return call{params: map[string]string{"sku": fmt.Sprintf("WALK-P-%d", c.next())},
			body: map[string]any{"name": "Walk product", "price_minor": 250, "currency": "CNY", "stock": 10}, want: 201, replay: 200}
	},
	"get-product":  func(c *contract, t *testing.T) call { return call{params: map[string]string{"sku": c.sku}, want: 200} },
	"create-order": func(c *contract, t *testing.T) call { return call{body: c.order(), want: 201, replay: 200} },
	"list-orders": func(c *contract, t *testing.T) call {
		return call{query: url.Values{"buyer_id": {"walk-buyer"}, "status": {"CREATED"}, "limit": {"5"}}, want: 200}
	},
	"get-order":         func(c *contract, t *testing.T) call { return call{params: idParam(c.orderID), want: 200} },
	"list-order-events": func(c *contract, t *testing.T) call { return call{params: idParam(c.orderID), want: 200} },
	"pay-order": func(c *contract, t *testing.T) call {
		return call{params: idParam(c.newOrder(t, "")), body: map[string]any{"payment_id": fmt.Sprintf("walk-pay-%d", c.next()), "amount_minor": 100}, want: 200, replay: 200}
	},
	"ship-order": func(c *contract, t *testing.T) call {
		return call{params: idParam(c.newOrder(t, "PAID")), body: map[string]any{"tracking_no": "SF-WALK-1"}, want: 200}
	},
	"receive-order": func(c *contract, t *testing.T) call {
		return call{params: idParam(c.newOrder(t, "SHIPPED")), want: 200}
	},
	"cancel-order": func(c *contract, t *testing.T) call {
		return call{params: idParam(c.newOrder(t, "")), body: map[string]any{"reason": "walk"}, want: 200}
	},
	"put-credit-line": func(c *contract, t *testing.T) call {
		return call{params: map[string]string{"borrower_id": fmt.Sprintf("walk-cl-%d", c.next())},
			body: map[string]any{"limit_minor": 1_000_000, "currency": "CNY", "frozen": false}, want: 201, replay: 200}
	},
	"get-credit-line": func(c *contract, t *testing.T) call {
		return call{params: map[string]string{"borrower_id": c.borrower}, want: 200}
	},
	"create-loan": func(c *contract, t *testing.T) call { return call{body: c.loan(), want: 201, replay: 200} },
	"list-loans": func(c *contract, t *testing.T) call {
		return call{query: url.Values{"borrower_id": {c.borrower}, "status": {"ACTIVE"}, "limit": {"5"}}, want: 200}
	},
	"get-loan":          func(c *contract, t *testing.T) call { return call{params: idParam(c.loanID), want: 200} },
	"get-loan-accruals": func(c *contract, t *testing.T) call { return call{params: idParam(c.loanID), want: 200} },
	"list-repayments": func(c *contract, t *testing.T) call {
		return call{params: idParam(c.loanID), query: url.Values{"limit": {"5"}}, want: 200}
	},
	"create-repayment": func(c *contract, t *testing.T) call {
		return call{params: idParam(c.loanID), body: c.repayment(), want: 201, replay: 200}
	},
	"start-cob-run": func(c *contract, t *testing.T) call {
		// The first open date has a (FAILED) run: a PUT returns it.
		return call{params: map[string]string{"date": c.failedDay}, want: 200}
	},
	"get-cob-run": func(c *contract, t *testing.T) call {
		return call{params: map[string]string{"date": c.cobDay}, want: 200}
	},
	"list-cob-runs": func(c *contract, t *testing.T) call { return call{query: url.Values{"limit": {"5"}}, want: 200} },
	"retry-cob-failures": func(c *contract, t *testing.T) call {
		return call{params: map[string]string{"date": c.failedDay}, want: 202}
	},
	"list-cases": func(c *contract, t *testing.T) call {
		return call{query: url.Values{"borrower_id": {"walk-cob"}, "status": {"OPEN"}, "limit": {"5"}}, want: 200}
	},
	"get-case": func(c *contract, t *testing.T) call { return call{params: idParam(c.caseID), want: 200} },
	"list-events": func(c *contract, t *testing.T) call {
		return call{query: url.Values{"limit": {"10"}, "type": {"order.created"}}, want: 200}
	},
	"list-dead-letters": func(c *contract, t *testing.T) call {
		return call{query: url.Values{"kind": {testkit.KindFail}, "limit": {"5"}}, want: 200}
	},
	"get-dead-letter": func(c *contract, t *testing.T) call {
		return call{params: map[string]string{"job_id": fmt.Sprint(c.deadLetters[0])}, want: 200}
	},
	"retry-dead-letter": func(c *contract, t *testing.T) call {
		return call{params: map[string]string{"job_id": fmt.Sprint(c.deadLetters[1])}, want: 200}
	},
	"create-batch": func(c *contract, t *testing.T) call { return call{body: c.batch(), want: 202, replay: 200} },
	"get-batch":    func(c *contract, t *testing.T) call { return call{params: idParam(c.batchID), want: 200} },
	"list-batch-items": func(c *contract, t *testing.T) call {
		return call{params: idParam(c.batchID), query: url.Values{"status": {"PENDING"}, "limit": {"5"}}, want: 200}
	},
	"cancel-batch": func(c *contract, t *testing.T) call {
		return call{params: idParam(id(c.mustDo(t, http.MethodPost, "/v1/batches", nil, c.batch(), http.StatusAccepted))), want: 200}
	},
	"create-webhook-subscription": func(c *contract, t *testing.T) call { return call{body: c.subscription(), want: 201} },
	"list-webhook-subscriptions": func(c *contract, t *testing.T) call {
		return call{query: url.Values{"limit": {"5"}}, want: 200}
	},
	"get-webhook-subscription": func(c *contract, t *testing.T) call { return call{params: idParam(c.subID), want: 200} },
	"delete-webhook-subscription": func(c *contract, t *testing.T) call {
		return call{params: idParam(id(c.mustDo(t, http.MethodPost, "/v1/webhook-subscriptions", nil, c.subscription(), http.StatusCreated))), want: 204}
	},
	"list-webhook-deliveries": func(c *contract, t *testing.T) call {
		return call{params: idParam(c.subID), query: url.Values{"limit": {"5"}}, want: 200}
	},
}
