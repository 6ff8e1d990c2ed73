package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/humatest"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"github.com/stretchr/testify/require"

	"riverbank/api"
	"riverbank/internal/batch"
	"riverbank/internal/ledger"
	"riverbank/internal/metrics"
	"riverbank/internal/orders"
	"riverbank/internal/testkit"
	"riverbank/jobs"
)

// batchesAPIBundle is the API on a test's database (a rolled-back
// transaction for requests that only store batches, or a database of its
// own where River clients work them).
type batchesAPIBundle struct {
	*testkit.Bundle
	api humatest.TestAPI
}

func setupBatchesAPI(t *testing.T) *batchesAPIBundle {
	t.Helper()
	k := testkit.Tx(t)
	return &batchesAPIBundle{Bundle: k, api: k.API(t)}
}

func (b *batchesAPIBundle) accounts(t *testing.T) (cash, rev string) {
	t.Helper()
	cash, rev = "cash:"+b.Suffix, "revenue:"+b.Suffix
	for code, typ := range map[string]string{cash: "ASSET", rev: "INCOME"} {
		_, _, err := b.Services.Ledger.CreateAccount(b.Ctx, ledger.AccountInput{Code: code, Name: code, Type: typ, Currency: "CNY"})
		require.NoError(t, err)
	}
	return cash, rev
}

func batchEntry(key, debit, credit string, amount int64) map[string]any {
	return map[string]any{"idempotency_key": key, "postings": []map[string]any{
		{"account": debit, "amount_minor": amount}, {"account": credit, "amount_minor": -amount}}}
}

type batchItemsPage struct {
	Items      []api.BatchItemBody `json:"items"`
	NextCursor string              `json:"next_cursor"`
}

// batchWrites counts the rows a batch request may write.
func (b *batchesAPIBundle) batchWrites(t *testing.T) [3]int64 {
	t.Helper()
	var w [3]int64
	require.NoError(t, b.DB.QueryRow(b.Ctx, `SELECT (SELECT count(*) FROM batch), (SELECT count(*) FROM batch_item), (SELECT count(*) FROM river_job)`).Scan(&w[0], &w[1], &w[2]))
	return w
}

func TestBatchesAPIStoresReplaysListsAndCancels(t *testing.T) {
	t.Parallel()
	b := setupBatchesAPI(t)
	cash, rev := b.accounts(t)
	items := make([]map[string]any, 250)
	for i := range items {
		items[i] = batchEntry(b.ID(fmt.Sprintf("je-%d", i)), cash, rev, 10)
	}
	body := map[string]any{"idempotency_key": b.ID("batch"), "operation": "journal_entry", "items": items}

	rec := b.api.Post("/v1/batches", body)
	require.Equal(t, http.StatusAccepted, rec.Code, rec.Body.String())
	created := testkit.DecodeJSON[api.BatchBody](t, rec)
	require.Equal(t, "RUNNING", created.Status)
	require.Equal(t, "journal_entry", created.Operation)
	require.Equal(t, []int{250, 0, 0, 250}, []int{created.Total, created.Succeeded, created.Failed, created.Pending})
	require.Nil(t, created.CompletedAt)
	// The batch, its items and its chunk jobs are in one transaction.
	rivertest.RequireManyInsertedTx[*riverpgxv5.Driver](b.Ctx, t, b.Tx, []rivertest.ExpectedJob{
		{Args: batch.ChunkArgs{BatchID: created.ID, From: 0, To: 100}, Opts: &rivertest.RequireInsertedOpts{Queue: jobs.QueueBatch, MaxAttempts: batch.ChunkMaxAttempts}},
		{Args: batch.ChunkArgs{BatchID: created.ID, From: 100, To: 200}},
		{Args: batch.ChunkArgs{BatchID: created.ID, From: 200, To: 250}},
	})
	writes := b.batchWrites(t)

	// The same request again is the same batch (200), and writes nothing.
	rec = b.api.Post("/v1/batches", body)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, created, testkit.DecodeJSON[api.BatchBody](t, rec))
	// Another payload under the key is 409.
	other := map[string]any{"idempotency_key": b.ID("batch"), "operation": "journal_entry", "items": items[:10]}
	p := testkit.RequireProblem(t, b.api.Post("/v1/batches", other), "idempotency_conflict", http.StatusConflict)
	require.EqualValues(t, created.ID, p.Details["batch_id"])
	require.Equal(t, writes, b.batchWrites(t))

	rec = b.api.Get(fmt.Sprintf("/v1/batches/%d", created.ID))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, created, testkit.DecodeJSON[api.BatchBody](t, rec))

	// Items page in index order.
	var got []api.BatchItemBody
	cursor := ""
	for pages := 0; ; pages++ {
		rec = b.api.Get(fmt.Sprintf("/v1/batches/%d/items?limit=100&status=PENDING&cursor=%s", created.ID, cursor))
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		page := testkit.DecodeJSON[batchItemsPage](t, rec)
		got = append(got, page.Items...)
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
		require.Less(t, pages, 5)
	}
	require.Len(t, got, 250)
	for i, it := range got {
		require.Equal(t, api.BatchItemBody{Index: i, Status: "PENDING"}, it)
	}
	rec = b.api.Get(fmt.Sprintf("/v1/batches/%d/items?status=FAILED", created.ID))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Empty(t, testkit.DecodeJSON[batchItemsPage](t, rec).Items)
	require.Contains(t, rec.Body.String(), `"items":[]`)
	testkit.RequireProblem(t, b.api.Get(fmt.Sprintf("/v1/batches/%d/items?status=DONE", created.ID)), "validation_failed", http.StatusUnprocessableEntity)
	testkit.RequireProblem(t, b.api.Get(fmt.Sprintf("/v1/batches/%d/items?cursor=nope", created.ID)), "validation_failed", http.StatusUnprocessableEntity)

	// Cancel: CANCELLED, and again the same.
	rec = b.api.Post(fmt.Sprintf("/v1/batches/%d/cancel", created.ID), map[string]any{})
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	cancelled := testkit.DecodeJSON[api.BatchBody](t, rec)
	require.Equal(t, "CANCELLED", cancelled.Status)
	require.NotNil(t, cancelled.CancelledAt)
	require.Equal(t, 250, cancelled.Pending)
	rec = b.api.Post(fmt.Sprintf("/v1/batches/%d/cancel", created.ID), map[string]any{})
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, cancelled, testkit.DecodeJSON[api.BatchBody](t, rec))

	for _, path := range []string{"/v1/batches/999999999", "/v1/batches/999999999/items"} {
		testkit.RequireProblem(t, b.api.Get(path), "not_found", http.StatusNotFound)
	}
	testkit.RequireProblem(t, b.api.Post("/v1/batches/999999999/cancel", map[string]any{}), "not_found", http.StatusNotFound)
}

func TestBatchesAPIRefusesBadEnvelopesWritingNothing(t *testing.T) {
	t.Parallel()
	b := setupBatchesAPI(t)
	item := map[string]any{"idempotency_key": "k", "postings": []any{}}
	tooMany := make([]any, batch.MaxItems+1)
	for i := range tooMany {
		tooMany[i] = item
	}
	before := b.batchWrites(t)
	for name, body := range map[string]any{
		"no key":          map[string]any{"operation": "order", "items": []any{item}},
		"empty key":       map[string]any{"idempotency_key": "", "operation": "order", "items": []any{item}},
		"unknown op":      map[string]any{"idempotency_key": "k", "operation": "transfer", "items": []any{item}},
		"no op":           map[string]any{"idempotency_key": "k", "items": []any{item}},
		"no items":        map[string]any{"idempotency_key": "k", "operation": "order"},
		"empty items":     map[string]any{"idempotency_key": "k", "operation": "order", "items": []any{}},
		"too many items":  map[string]any{"idempotency_key": "k", "operation": "order", "items": tooMany},
		"a number item":   map[string]any{"idempotency_key": "k", "operation": "order", "items": []any{item, 7}},
		"an array item":   map[string]any{"idempotency_key": "k", "operation": "order", "items": []any{[]any{item}}},
		"a null item":     map[string]any{"idempotency_key": "k", "operation": "order", "items": []any{nil}},
		"items an object": map[string]any{"idempotency_key": "k", "operation": "order", "items": item},
		"unknown field":   map[string]any{"idempotency_key": "k", "operation": "order", "items": []any{item}, "priority": 1},
	} {
		rec := b.api.Post("/v1/batches", body)
		testkit.RequireProblem(t, rec, "validation_failed", http.StatusUnprocessableEntity)
		require.Equal(t, before, b.batchWrites(t), name)
	}
	rec := b.api.Post("/v1/batches", strings.NewReader(`{"idempotency_key": "k", "operation": "order", "items": [{"a": 1}`))
	testkit.RequireProblem(t, rec, "validation_failed", http.StatusBadRequest, http.StatusUnprocessableEntity)
	require.Equal(t, before, b.batchWrites(t))
}

// TestBatchesAPIBodyLimit: POST /v1/batches alone takes bodies up to
// 16 MiB; every other endpoint keeps the 1 MiB limit. Through the whole
// HTTP handler, whose middleware enforces the limits.
func TestBatchesAPIBodyLimit(t *testing.T) {
	t.Parallel()
	k := testkit.Tx(t)
	k.Config.AuthOff = true
	h := api.NewHandler(api.HandlerOpts{
		Services: &api.Services{Services: k.Services, River: k.Inserter},
		Metrics:  metrics.New(k.Store.Queries(), slog.New(slog.DiscardHandler)),
		Ready:    func(context.Context) error { return nil },
	})
	do := func(path string, body []byte, knownLength bool) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if !knownLength {
			// As a chunked request: only reading the body finds its size.
			req.Body, req.ContentLength = io.NopCloser(bytes.NewReader(body)), -1
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}

	// A valid batch of about 2 MB.
	b := &batchesAPIBundle{Bundle: k}
	cash, rev := b.accounts(t)
	items := make([]map[string]any, 3000)
	for i := range items {
		items[i] = batchEntry(k.ID(fmt.Sprintf("je-%d", i)), cash, rev, 10)
		items[i]["description"] = strings.Repeat("d", 500)
	}
	big, err := json.Marshal(map[string]any{"idempotency_key": k.ID("big"), "operation": "journal_entry", "items": items})
	require.NoError(t, err)
	require.Greater(t, len(big), api.MaxBodyBytes)
	require.Less(t, len(big), api.MaxBatchBodyBytes)

	for _, known := range []bool{true, false} {
		rec := do("/v1/batches", big, known)
		require.Contains(t, []int{http.StatusAccepted, http.StatusOK}, rec.Code, rec.Body.String())
		require.Equal(t, 3000, testkit.DecodeJSON[api.BatchBody](t, rec).Total)
		// Elsewhere the same body is too large (an endpoint without a
		// body never reads a chunked one, so only a known length is
		// refused there).
		paths := []string{"/v1/journal-entries", "/v1/orders"}
		if known {
			paths = append(paths, "/v1/batches/1/cancel", "/v1/batches/")
		}
		for _, path := range paths {
			rec := do(path, big, known)
			testkit.RequireProblem(t, rec, "request_too_large", http.StatusRequestEntityTooLarge)
		}
		// Over 16 MiB is too large for batches too.
		over := append(bytes.Repeat([]byte(" "), api.MaxBatchBodyBytes-len(big)+1), big...)
		rec = do("/v1/batches", over, known)
		p := testkit.RequireProblem(t, rec, "request_too_large", http.StatusRequestEntityTooLarge)
		if known {
			require.Contains(t, p.Detail, fmt.Sprint(api.MaxBatchBodyBytes))
		}
	}
	require.EqualValues(t, 1, k.Count(t, "SELECT count(*) FROM batch"))
}

// TestBatchesAPIItemsAnswerAsTheSingleEndpoint: submitted through the API
// and worked by a River client, every item ends as its single endpoint
// answers the same body: a failed item has the problem's code and detail,
// a successful one the id the endpoint returns for it (a replay now).
func TestBatchesAPIItemsAnswerAsTheSingleEndpoint(t *testing.T) {
	t.Parallel()
	k := testkit.DB(t, testkit.DBOptions{})
	b := &batchesAPIBundle{Bundle: k, api: k.API(t)}
	client := k.Client(t, func(reg *jobs.Registration) { reg.Periodic = nil })
	testkit.Start(t, client)
	cash, rev := b.accounts(t)
	sku := k.ID("SKU")
	_, _, err := k.Services.Orders.PutProduct(k.Ctx, orders.ProductInput{SKU: sku, Name: "Two left", PriceMinor: 100, Currency: "CNY", Stock: 2})
	require.NoError(t, err)

	entries := []any{
		batchEntry(k.ID("je-0"), cash, rev, 10),
		map[string]any{"idempotency_key": k.ID("je-1"), "postings": []map[string]any{{"account": cash, "amount_minor": 10}, {"account": rev, "amount_minor": -9}}},
		batchEntry(k.ID("je-2"), cash, "nope:"+k.Suffix, 10),
		map[string]any{"idempotency_key": k.ID("je-3"), "postings": []map[string]any{{"account": cash, "amount_minor": 10}}},
		batchEntry("", cash, rev, 10),
	}
	order := func(buyer string, qty int64, sku string) map[string]any {
		return map[string]any{"buyer_id": k.ID(buyer), "merchant_id": "shop-1", "identifier": "cart-1", "items": []map[string]any{{"sku": sku, "quantity": qty}}}
	}
	ordersItems := []any{order("b0", 2, sku), order("b1", 1, sku), order("b2", 1, "NOPE-"+k.Suffix), order("b3", 0, sku)}

	for _, tc := range []struct {
		op, path string
		items    []any
		okCode   int
	}{
		{"journal_entry", "/v1/journal-entries", entries, http.StatusOK},
		{"order", "/v1/orders", ordersItems, http.StatusOK},
	} {
		rec := b.api.Post("/v1/batches", map[string]any{"idempotency_key": k.ID(tc.op), "operation": tc.op, "items": tc.items})
		require.Equal(t, http.StatusAccepted, rec.Code, rec.Body.String())
		id := testkit.DecodeJSON[api.BatchBody](t, rec).ID
		var bt api.BatchBody
		testkit.WaitFor(t, 30*time.Second, "the batch to complete", func() bool {
			rec := b.api.Get(fmt.Sprintf("/v1/batches/%d", id))
			require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
			bt = testkit.DecodeJSON[api.BatchBody](t, rec)
			return bt.Status == "COMPLETED"
		})
		require.NotNil(t, bt.CompletedAt)
		rec = b.api.Get(fmt.Sprintf("/v1/batches/%d/items", id))
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		page := testkit.DecodeJSON[batchItemsPage](t, rec)
		require.Len(t, page.Items, len(tc.items))
		failed := 0
		for i, it := range page.Items {
			single := b.api.Post(tc.path, tc.items[i])
			if it.Status == "SUCCEEDED" {
				require.Equal(t, tc.okCode, single.Code, "%s item %d: %s", tc.op, i, single.Body.String())
				var res struct{ ID int64 }
				require.NoError(t, json.Unmarshal(single.Body.Bytes(), &res))
				require.Equal(t, *it.ResultID, res.ID, "%s item %d", tc.op, i)
				continue
			}
			failed++
			require.Equal(t, "FAILED", it.Status)
			p := testkit.RequireProblem(t, single, it.Error.Code, http.StatusUnprocessableEntity, http.StatusConflict, http.StatusNotFound)
			if len(p.Errors) == 0 {
				// The endpoint's schema validation words its messages its
				// own way; a domain's message is the same.
				require.Equal(t, p.Detail, it.Error.Detail, "%s item %d", tc.op, i)
			}
		}
		require.Equal(t, bt.Failed, failed)
		require.Equal(t, len(tc.items)-failed, bt.Succeeded)
	}
	require.EqualValues(t, 2, k.Count(t, "SELECT count(*) FROM event WHERE type = 'batch.completed'"))
}

// TestBatchesAPIDocumentsEveryStatus: every status a batch operation
// answers is in the OpenAPI document, the replay's 200 with the 202's body.
func TestBatchesAPIDocumentsEveryStatus(t *testing.T) {
	t.Parallel()
	_, tapi := humatest.New(t)
	api.Register(tapi, &api.Services{Services: testkit.Tx(t).Services})
	paths := tapi.OpenAPI().Paths
	for _, tc := range []struct {
		path, method string
		statuses     []string
	}{
		{"/v1/batches", http.MethodPost, []string{"200", "202", "409", "413", "422"}},
		{"/v1/batches/{id}", http.MethodGet, []string{"200", "404", "422"}},
		{"/v1/batches/{id}/items", http.MethodGet, []string{"200", "404", "422"}},
		{"/v1/batches/{id}/cancel", http.MethodPost, []string{"200", "404", "409", "422"}},
	} {
		item := paths[tc.path]
		require.NotNil(t, item, tc.path)
		op := map[string]*huma.Operation{http.MethodGet: item.Get, http.MethodPost: item.Post}[tc.method]
		require.NotNil(t, op, "%s %s", tc.method, tc.path)
		var got []string
		for code := range op.Responses {
			got = append(got, code)
		}
		require.Subset(t, got, tc.statuses, "%s %s", tc.method, tc.path)
	}
	post := paths["/v1/batches"].Post
	require.Equal(t, post.Responses["202"].Content["application/json"].Schema.Ref, post.Responses["200"].Content["application/json"].Schema.Ref)
	require.EqualValues(t, api.MaxBatchBodyBytes, post.MaxBodyBytes)
}

// TestBatchesAPIItemTextFailsAlone: an item whose text breaks the text
// rule (invalid UTF-8 sent as raw bytes, a lone surrogate escape, a NUL
// escape) fails alone, as the contract says: the batch is 202, the item
// is FAILED from the start (counted in failed) with validation_failed and
// exactly the detail the single endpoint's 422 gives for the same body,
// naming the field within the item; the other items run, and no U+FFFD
// reaches the ledger. A batch of nothing but such items completes. The
// envelope keeps the rule (422, nothing written), and the request hash
// tells items apart byte for byte.
func TestBatchesAPIItemTextFailsAlone(t *testing.T) {
	t.Parallel()
	k := testkit.DB(t, testkit.DBOptions{})
	b := &batchesAPIBundle{Bundle: k, api: k.API(t)}
	cash, rev := b.accounts(t)
	item := func(n int, description, account, key string) string {
		if key == "" {
			key = k.ID(fmt.Sprintf("je-%d", n))
		}
		return `{"idempotency_key":"` + key + `","description":"` + description + `","postings":[` +
			`{"account":"` + account + `","amount_minor":10},{"account":"` + rev + `","amount_minor":-10}]}`
	}
	// Item 0 is valid, with multi-byte text and a surrogate pair.
	const description = `Café 中文 \ud834\udd1e`
	items := []string{
		item(0, description, cash, ""),
		item(1, "ok", cash+"\xff\xfe", ""),
		item(2, `lone \ud800 here`, cash, ""),
		item(3, "ok", cash, k.ID("je-3")+`\u0000`),
	}
	want := []struct{ field, reason string }{
		{},
		{"postings[0].account", "is not valid UTF-8"},
		{"description", "contains a lone UTF-16 surrogate"},
		{"idempotency_key", "contains a NUL character"},
	}
	body := func(key string, items []string) io.Reader {
		return strings.NewReader(`{"idempotency_key":"` + key + `","operation":"journal_entry","items":[` + strings.Join(items, ",") + `]}`)
	}

	// The envelope keeps the text rule, even after items that break it.
	before := b.batchWrites(t)
	for name, key := range map[string]string{"invalid UTF-8": "k\xff", "lone surrogate": `k\udc00`, "NUL": `k\u0000`} {
		p := testkit.RequireProblem(t, b.api.Post("/v1/batches", body(key, items)), "validation_failed", http.StatusUnprocessableEntity)
		require.Equal(t, "idempotency_key", p.Details["field"], name)
		require.Equal(t, before, b.batchWrites(t), name)
	}
	require.Zero(t, k.Count(t, "SELECT count(*) FROM batch_tally"))

	rec := b.api.Post("/v1/batches", body(k.ID("mixed"), items))
	require.Equal(t, http.StatusAccepted, rec.Code, rec.Body.String())
	created := testkit.DecodeJSON[api.BatchBody](t, rec)
	require.Equal(t, "RUNNING", created.Status)
	require.Equal(t, []int{4, 0, 3, 1}, []int{created.Total, created.Succeeded, created.Failed, created.Pending}, "counted from the start")

	// Replays and conflicts, on the raw bytes of the items.
	rec = b.api.Post("/v1/batches", body(k.ID("mixed"), items))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, created.ID, testkit.DecodeJSON[api.BatchBody](t, rec).ID)
	writes := b.batchWrites(t)
	for _, account := range []string{cash + "\xff\xfd", cash + "\uFFFD\uFFFD"} {
		changed := slices.Clone(items)
		changed[1] = item(1, "ok", account, "")
		p := testkit.RequireProblem(t, b.api.Post("/v1/batches", body(k.ID("mixed"), changed)), "idempotency_conflict", http.StatusConflict)
		require.EqualValues(t, created.ID, p.Details["batch_id"])
	}
	require.Equal(t, writes, b.batchWrites(t))

	// A batch of nothing but such items.
	rec = b.api.Post("/v1/batches", body(k.ID("all-failed"), items[1:]))
	require.Equal(t, http.StatusAccepted, rec.Code, rec.Body.String())
	allFailed := testkit.DecodeJSON[api.BatchBody](t, rec)
	require.Equal(t, []int{3, 0, 3, 0}, []int{allFailed.Total, allFailed.Succeeded, allFailed.Failed, allFailed.Pending})

	client := k.Client(t, func(reg *jobs.Registration) { reg.Periodic = nil })
	testkit.Start(t, client)
	wait := func(id int64) api.BatchBody {
		var bt api.BatchBody
		testkit.WaitFor(t, 30*time.Second, "the batch to complete", func() bool {
			rec := b.api.Get(fmt.Sprintf("/v1/batches/%d", id))
			require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
			bt = testkit.DecodeJSON[api.BatchBody](t, rec)
			return bt.Status != "RUNNING"
		})
		require.Equal(t, "COMPLETED", bt.Status)
		require.NotNil(t, bt.CompletedAt)
		return bt
	}
	bt := wait(created.ID)
	require.Equal(t, []int{1, 3, 0}, []int{bt.Succeeded, bt.Failed, bt.Pending})
	bt = wait(allFailed.ID)
	require.Equal(t, []int{0, 3, 0}, []int{bt.Succeeded, bt.Failed, bt.Pending})
	for _, id := range []int64{created.ID, allFailed.ID} {
		require.EqualValues(t, 1, k.Count(t, "SELECT count(*) FROM event WHERE type = 'batch.completed' AND subject_id = $1", fmt.Sprint(id)))
	}

	rec = b.api.Get(fmt.Sprintf("/v1/batches/%d/items", created.ID))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	page := testkit.DecodeJSON[batchItemsPage](t, rec)
	require.Len(t, page.Items, 4)
	require.Equal(t, "SUCCEEDED", page.Items[0].Status, "%+v", page.Items[0].Error)
	var got string
	require.NoError(t, k.DB.QueryRow(k.Ctx, "SELECT description FROM ledger_entry WHERE id = $1", *page.Items[0].ResultID).Scan(&got))
	require.Equal(t, "Café 中文 \U0001D11E", got, "the description exactly as sent")
	rec = b.api.Get(fmt.Sprintf("/v1/batches/%d/items?status=FAILED", allFailed.ID))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	failedOnly := testkit.DecodeJSON[batchItemsPage](t, rec).Items
	require.Len(t, failedOnly, 3)
	for i := 1; i < 4; i++ {
		it := page.Items[i]
		require.Equal(t, "FAILED", it.Status, "item %d", i)
		require.Nil(t, it.ResultID)
		require.NotNil(t, it.Error, "item %d", i)
		require.Equal(t, "validation_failed", it.Error.Code, "item %d", i)
		require.Equal(t, want[i].field+" "+want[i].reason+": text must be valid UTF-8 without NUL characters or lone surrogates", it.Error.Detail, "item %d", i)
		require.Equal(t, *it.Error, *failedOnly[i-1].Error, "item %d in the batch of failures", i)
		// Exactly what the single endpoint answers for the same body.
		p := testkit.RequireProblem(t, b.api.Post("/v1/journal-entries", strings.NewReader(items[i])), "validation_failed", http.StatusUnprocessableEntity)
		require.Equal(t, it.Error.Detail, p.Detail, "item %d", i)
		require.Equal(t, want[i].field, p.Details["field"], "item %d", i)
	}

	// Nothing of the failed items reached the ledger, and no U+FFFD did.
	require.EqualValues(t, 1, k.Count(t, "SELECT count(*) FROM ledger_entry"))
	for _, table := range []string{"ledger_account", "ledger_entry", "ledger_posting"} {
		require.Zero(t, k.Count(t, "SELECT count(*) FROM "+table+" x WHERE strpos(x::text, U&'\\FFFD') > 0"), table)
	}
}
