package api

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"riverbank"
	"riverbank/internal/batch"
)

// MaxBatchBodyBytes bounds the body of POST /v1/batches, the one endpoint
// allowed more than MaxBodyBytes: 10,000 items of a few hundred bytes.
const MaxBatchBodyBytes = 16 << 20

// BatchBody is a batch with its counters.
type BatchBody struct {
	ID             int64      `json:"id"`
	IdempotencyKey string     `json:"idempotency_key"`
	Operation      string     `json:"operation" enum:"journal_entry,order,loan,repayment"`
	Status         string     `json:"status" enum:"RUNNING,COMPLETED,CANCELLED"`
	Total          int        `json:"total"`
	Succeeded      int        `json:"succeeded"`
	Failed         int        `json:"failed"`
	Pending        int        `json:"pending" doc:"Items not done yet; on a CANCELLED batch, the items that were never started."`
	CreatedAt      time.Time  `json:"created_at"`
	CompletedAt    *time.Time `json:"completed_at" doc:"When the last item was done (null until COMPLETED)."`
	CancelledAt    *time.Time `json:"cancelled_at,omitempty"`
}

func batchBody(b *batch.Batch) BatchBody {
	return BatchBody{
		ID: b.ID, IdempotencyKey: b.IdempotencyKey, Operation: b.Operation, Status: b.Status, Total: b.Total,
		Succeeded: b.Succeeded, Failed: b.Failed, Pending: b.Pending, CreatedAt: b.CreatedAt, CompletedAt: b.CompletedAt, CancelledAt: b.CancelledAt,
	}
}

// BatchItemErrorBody is why an item failed: the code and message its
// single endpoint would have answered.
type BatchItemErrorBody struct {
	Code   string `json:"code" example:"insufficient_stock"`
	Detail string `json:"detail"`
}

// BatchItemBody is one item's outcome.
type BatchItemBody struct {
	Index    int    `json:"index" doc:"0-based position in the submitted items."`
	Status   string `json:"status" enum:"PENDING,SUCCEEDED,FAILED"`
	ResultID *int64 `json:"result_id" doc:"The id of the journal entry, order, loan or repayment (SUCCEEDED only)."`
	// Error is absent, not null, on other items: the document cannot
	// describe a nullable object (huma documents only scalars as nullable).
	Error *BatchItemErrorBody `json:"error,omitempty" doc:"Present on FAILED items only."`
}

// BatchItemInput is one submitted item, kept as sent (raw bytes, invalid
// UTF-8 included: the text rule leaves items to internal/batch, which
// checks each on its own): the body of the operation's single endpoint
// (plus loan_id for repayments). It is validated when it runs, exactly as
// that endpoint validates it.
type BatchItemInput json.RawMessage

// Schema implements huma.SchemaProvider: any JSON object.
func (BatchItemInput) Schema(huma.Registry) *huma.Schema {
	return &huma.Schema{Type: huma.TypeObject, AdditionalProperties: true,
		Description: "The body of the single endpoint: POST /v1/journal-entries, POST /v1/orders, POST /v1/loans, or POST /v1/loans/{id}/repayments plus loan_id."}
}

// UnmarshalJSON keeps the item's JSON as it is.
func (b *BatchItemInput) UnmarshalJSON(data []byte) error {
	*b = append((*b)[:0], data...)
	return nil
}

type createBatchInput struct {
	Body struct {
		IdempotencyKey string           `json:"idempotency_key" minLength:"1" maxLength:"200" doc:"The same key with the same operation and items returns the batch (200); with another payload it is 409 idempotency_conflict." example:"import-2026-05-01"`
		Operation      string           `json:"operation" enum:"journal_entry,order,loan,repayment"`
		Items          []BatchItemInput `json:"items" minItems:"1" maxItems:"10000"`
	}
}

type batchOutput struct {
	Status int
	Body   BatchBody
}

type batchIDInput struct {
	ID int64 `path:"id" minimum:"1"`
}

type listBatchItemsInput struct {
	ID     int64  `path:"id" minimum:"1"`
	Status string `query:"status" enum:"PENDING,SUCCEEDED,FAILED" doc:"Only items in this status."`
	PageParams
}

type listBatchItemsOutput struct {
	Body struct {
		Items      []BatchItemBody `json:"items" doc:"In index order."`
		NextCursor string          `json:"next_cursor,omitempty"`
	}
}

func (h *handlers) registerBatches(api huma.API) {
	tags := []string{"Batches"}
	huma.Register(api, huma.Operation{OperationID: "create-batch", Method: http.MethodPost, Path: "/v1/batches", Summary: "Submit a batch of journal entries, orders, loans or repayments", Tags: tags,
		Description: "Stores the batch and its items and enqueues its batch.chunk jobs in one transaction, then answers 202 with the batch RUNNING. " +
			"Each item goes through the same code path, validation and idempotency as its single endpoint when it runs: an invalid item fails alone, with the code that endpoint would give " +
			"(GET /v1/batches/{id}/items). Only the envelope is checked here (422 writing nothing): idempotency_key, operation, 1..10,000 items, each a JSON object, " +
			"and the text rule on the envelope's own strings. An item whose text breaks the text rule (invalid UTF-8, a lone surrogate escape, NUL) fails alone too: " +
			"it is FAILED from the start with validation_failed and the detail its endpoint's 422 would give, naming the field within the item (postings[0].account), " +
			"and is counted in failed. The body may be up to 16 MiB (every other endpoint: 1 MiB).",
		DefaultStatus: http.StatusAccepted, MaxBodyBytes: MaxBatchBodyBytes, BodyReadTimeout: BatchBodyReadTimeout,
		Metadata: withTextItems(answers(codes(riverbank.EIDEMPOTENCYCONFLICT),
			map[int]string{http.StatusOK: "A repeat of the same request (same idempotency_key, operation and items): the stored batch as it is now. Nothing is written."}), "items")}, h.createBatch)
	huma.Register(api, huma.Operation{OperationID: "get-batch", Method: http.MethodGet, Path: "/v1/batches/{id}", Summary: "Get a batch with its counters", Tags: tags,
		Metadata: answers(codes(riverbank.ENOTFOUND), nil)}, h.getBatch)
	huma.Register(api, huma.Operation{OperationID: "list-batch-items", Method: http.MethodGet, Path: "/v1/batches/{id}/items", Summary: "A batch's items and their outcomes, in index order", Tags: tags,
		Metadata: answers(codes(riverbank.ENOTFOUND), nil)}, h.listBatchItems)
	huma.Register(api, huma.Operation{OperationID: "cancel-batch", Method: http.MethodPost, Path: "/v1/batches/{id}/cancel", Summary: "Cancel a running batch", Tags: tags,
		Description: "Items not yet started are never started (they stay PENDING); items already running finish. Cancelling a CANCELLED batch returns it; a COMPLETED batch is 409 invalid_transition.",
		Metadata:    answers(codes(riverbank.ENOTFOUND, riverbank.EINVALIDTRANSITION), nil)}, h.cancelBatch)
}

// withTextItems names the top-level array of an operation's body whose
// elements the text rule leaves to the handler (see textRule).
func withTextItems(metadata map[string]any, items string) map[string]any {
	metadata[textItemsKey] = items
	return metadata
}

func (h *handlers) createBatch(ctx context.Context, in *createBatchInput) (*batchOutput, error) {
	items := make([]json.RawMessage, len(in.Body.Items))
	for i, it := range in.Body.Items {
		items[i] = json.RawMessage(it)
	}
	b, created, err := h.Batches.Create(ctx, batch.CreateInput{IdempotencyKey: in.Body.IdempotencyKey, Operation: in.Body.Operation, Items: items})
	if err != nil {
		return nil, err
	}
	status := http.StatusOK
	if created {
		status = http.StatusAccepted
	}
	return &batchOutput{Status: status, Body: batchBody(b)}, nil
}

func (h *handlers) getBatch(ctx context.Context, in *batchIDInput) (*batchOutput, error) {
	b, err := h.Batches.Get(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &batchOutput{Status: http.StatusOK, Body: batchBody(b)}, nil
}

func (h *handlers) cancelBatch(ctx context.Context, in *batchIDInput) (*batchOutput, error) {
	b, err := h.Batches.Cancel(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &batchOutput{Status: http.StatusOK, Body: batchBody(b)}, nil
}

func (h *handlers) listBatchItems(ctx context.Context, in *listBatchItemsInput) (*listBatchItemsOutput, error) {
	after := -1
	if in.Cursor != "" {
		// The cursor holds the last index shown + 1 (cursors are positive).
		next, err := decodeIDCursor(in.Cursor)
		if err != nil {
			return nil, err
		}
		after = int(min(next, batch.MaxItems+1)) - 1
	}
	limit := in.limit()
	items, err := h.Batches.Items(ctx, in.ID, batch.ItemFilter{Status: in.Status, AfterIndex: after, Limit: limit})
	if err != nil {
		return nil, err
	}
	out := &listBatchItemsOutput{}
	out.Body.Items = make([]BatchItemBody, len(items))
	for i, it := range items {
		b := BatchItemBody{Index: it.Index, Status: it.Status, ResultID: it.ResultID}
		if it.Error != nil {
			b.Error = &BatchItemErrorBody{Code: it.Error.Code, Detail: it.Error.Detail}
		}
		out.Body.Items[i] = b
	}
	if len(items) == limit {
		out.Body.NextCursor = encodeIDCursor(int64(items[len(items)-1].Index) + 1)
	}
	return out, nil
}
