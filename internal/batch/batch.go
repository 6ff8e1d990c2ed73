// Package batch runs submitted batches (SPEC §8): up to 10,000 journal
// entries, orders, loans or repayments sent in one request, each item done
// through the same domain function, validation and idempotency as its
// single-item endpoint, by River jobs that every instance works.
//
// # Submission
//
// Create stores the batch (RUNNING, every item PENDING but those failed by
// the text rule below, each item's JSON as sent) and inserts its
// batch.chunk jobs — one per ChunkSize items — in one transaction: a batch
// without its jobs, or jobs without their batch, cannot exist. The
// batch's idempotency_key makes a repeat of the same request return the
// stored batch; the same key with another payload is idempotency_conflict
// (the request hash is over the items' bytes as sent, compacted, so items
// that differ only in invalid bytes differ). Only the envelope is checked
// at submission (operation, 1..10,000 items, each a JSON object); an
// item's own validation happens when it runs, and an invalid item fails
// alone.
//
// The one rule of an item checked at submission is the API's text rule
// (internal/jsontext): it must be checked on the raw bytes, which a JSON
// decoder would already have turned into U+FFFD. Each item is scanned on
// its own, and one whose text breaks the rule (invalid UTF-8, a lone
// surrogate escape, NUL) is stored FAILED from the start, with
// validation_failed and the detail the single endpoint's 422 gives for the
// same body (its field named within the item: "postings[0].account"); it
// never runs. Its payload is stored with invalid bytes replaced by U+FFFD
// (Postgres refuses invalid UTF-8 in any text), and a tally row counting
// it is written in the creating transaction.
//
// # Exactly once
//
// A chunk job claims its items in small groups with FOR UPDATE SKIP LOCKED
// on rows still PENDING, runs each through the domain function on a store
// that sits on the claiming transaction, and records every outcome —
// SUCCEEDED with the result's id, or FAILED with the domain's client-safe
// code and message — and the group's tally row in that same transaction.
// The domain's own InTx joins the group's transaction; should an item need
// its own rollback (it failed after running a statement), the group is
// rolled back and redone with the domain's InTx as a savepoint per item,
// so a failing item undoes its own writes and nothing else (joined.go). So
// an item's effect, its status and its count commit or roll back together:
//
//   - a runner killed mid-group loses its uncommitted group, rows and
//     statuses alike; the items are PENDING again and the rescued job
//     (River's rescuer, after RIVERBANK_JOB_TIMEOUT×2) does them once;
//   - a committed item is no longer PENDING, so no runner claims it again;
//   - two runners of one chunk (a rescued job whose first run is still
//     alive) never hold the same item: SKIP LOCKED passes over the rows the
//     other holds, and the PENDING re-check after a lock sees what it
//     committed.
//
// Independently of that, every item carries its domain idempotency key
// (a journal entry's idempotency_key, an order's (buyer_id, identifier), a
// loan's loan_no, a repayment's (loan_id, identifier)): an item whose key
// was already used — by the single endpoint, an earlier batch, or an
// earlier item of this one — gets the original's result, as the single
// endpoint would answer it.
//
// # Failures
//
// A domain error (riverbank.Error with a client code) fails the item with
// that code and message — exactly what the single endpoint would answer;
// a value Postgres refuses as text is validation_failed, as the API maps
// it. Any other error (database unavailable, deadlock, timeout, a bug) is
// internal and does not fail the item: it stays PENDING, the chunk's other
// items go on, and the job returns an error so River retries the chunk
// with backoff (ChunkMaxAttempts attempts). On the last attempt an item
// that still fails internally is recorded FAILED with code internal and
// detail "internal error" (the cause is logged, never stored), so every
// batch completes. A group whose transaction fails as a whole is redone
// one item per transaction, so one item cannot hold back the others.
//
// # Counting and completion
//
// Counters live in the database as tally rows (batch_tally), one per
// transaction that recorded items (a chunk's group, or the creating
// transaction for items failed at submission), written with those items;
// succeeded and failed are their sums and pending = total − succeeded −
// failed. There is
// no counter on the batch row on purpose: every chunk transaction would
// lock that one row until it commits, so the commits of all chunks — on
// every instance — would follow one another, one fsync at a time. After
// its last commit every chunk run tries to complete the batch: one short
// transaction sets a RUNNING batch whose tallies add up to total COMPLETED
// with completed_at and appends batch.completed (events.AppendTx). The run
// that commits the last items sees every tally, so it is the one; two runs
// that both see them meet on the batch row and the second finds it
// COMPLETED. A batch whose every item failed at submission has its tallies
// complete from the start; its chunks find nothing pending and the first
// to try completes it. A run cut off between its last commit and that
// step is run again by River, and a chunk that exhausts its attempts is a
// dead letter an operator retries (GET /v1/dead-letters).
//
// # Cancel
//
// Cancel moves a RUNNING batch to CANCELLED. Items not yet started are
// never started (a claim requires a RUNNING batch) and stay PENDING —
// pending on a cancelled batch counts the items that were not done; items
// already claimed by a running group finish and are counted. A COMPLETED
// batch cannot be cancelled (409 invalid_transition); cancelling a
// cancelled batch returns it unchanged.
package batch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/riverqueue/river"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/jsontext"
	"riverbank/internal/ledger"
	"riverbank/internal/lending"
	"riverbank/internal/orders"
	"riverbank/internal/queue"
)

// Operations: what every item of a batch is.
const (
	OpJournalEntry = "journal_entry"
	OpOrder        = "order"
	OpLoan         = "loan"
	OpRepayment    = "repayment"
)

// Operations lists every operation.
var Operations = []string{OpJournalEntry, OpOrder, OpLoan, OpRepayment}

// Batch statuses.
const (
	StatusRunning   = "RUNNING"
	StatusCompleted = "COMPLETED"
	StatusCancelled = "CANCELLED"
)

// Item statuses.
const (
	ItemPending   = "PENDING"
	ItemSucceeded = "SUCCEEDED"
	ItemFailed    = "FAILED"
)

// Limits.
const (
	// MaxItems bounds one batch.
	MaxItems = 10_000
	// MaxKeyLen bounds a batch's idempotency key.
	MaxKeyLen = 200
	// ChunkSize is how many items one batch.chunk job does.
	ChunkSize = 100
	// ChunkMaxAttempts is how often River runs a chunk before its last
	// attempt records the items that still fail internally as FAILED.
	ChunkMaxAttempts = 10
)

// KindChunk is the kind of the batch.chunk job.
const KindChunk = "batch.chunk"

// ChunkArgs are the args of batch.chunk: do the items of batch BatchID with
// index in [From, To).
type ChunkArgs struct {
	BatchID int64 `json:"batch_id"`
	From    int   `json:"from"`
	To      int   `json:"to"`
}

// Kind implements river.JobArgs.
func (ChunkArgs) Kind() string { return KindChunk }

// InsertOpts implements river.JobArgsWithInsertOpts. Chunks have a queue
// of their own, so a 10,000-item batch cannot hold back order confirmation
// or credit restoration in the default queue.
func (ChunkArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: queue.Batch, MaxAttempts: ChunkMaxAttempts}
}

// Domains are the single-item services an item runs through, built on a
// store that sits on the transaction claiming the item.
type Domains struct {
	Ledger  *ledger.Service
	Orders  *orders.Service
	Lending *lending.Service
}

// DomainsFunc builds the domain services on store. The process passes one
// that builds them with its own options (domains.New), so an item runs
// exactly as the single endpoint's request would.
type DomainsFunc func(store *db.Store) Domains

// Options configure the service.
type Options struct {
	// Logger receives internal item errors (their text is never stored).
	Logger *slog.Logger
	// Domains builds the single-item services on a transaction's store
	// (required).
	Domains DomainsFunc
	// ChunkSize overrides ChunkSize (tests).
	ChunkSize int
}

// Service stores, runs, reads and cancels batches.
type Service struct {
	store     *db.Store
	logger    *slog.Logger
	domains   DomainsFunc
	chunkSize int
}

// NewService returns a batch service on store.
func NewService(store *db.Store, opts Options) *Service {
	s := &Service{store: store, logger: opts.Logger, domains: opts.Domains, chunkSize: opts.ChunkSize}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.chunkSize <= 0 {
		s.chunkSize = ChunkSize
	}
	return s
}

// Batch is a batch with its counters.
type Batch struct {
	ID             int64
	IdempotencyKey string
	Operation      string
	Status         string
	Total          int
	Succeeded      int
	Failed         int
	Pending        int
	CreatedAt      time.Time
	CompletedAt    *time.Time
	CancelledAt    *time.Time
}

// batchFromRow is a batch row with its counters (the sums of its tallies).
func batchFromRow(r db.GetBatchRow) *Batch {
	return &Batch{
		ID: r.ID, IdempotencyKey: r.IdempotencyKey, Operation: string(r.Operation), Status: string(r.Status),
		Total: int(r.Total), Succeeded: int(r.Succeeded), Failed: int(r.Failed), Pending: int(r.Total - r.Succeeded - r.Failed),
		CreatedAt: r.CreatedAt, CompletedAt: r.CompletedAt, CancelledAt: r.CancelledAt,
	}
}

// CreateInput is POST /v1/batches. Items are kept as sent (each the body
// of the operation's single endpoint, plus loan_id for repayments).
type CreateInput struct {
	IdempotencyKey string
	Operation      string
	Items          []json.RawMessage
}

func invalid(format string, args ...any) *riverbank.Error {
	return riverbank.Errorf(riverbank.EINVALID, format, args...)
}

// submitted is one submitted item as Create stores it.
type submitted struct {
	// payload is the item's JSON, compact, as stored (valid UTF-8: an item
	// failed at submission has its invalid bytes replaced by U+FFFD; it is
	// never run).
	payload string
	// failed, when set, is why the item failed at submission: it broke
	// the text rule, as the single endpoint's request would have.
	failed *ItemError
}

// validate checks the envelope and returns the items in canonical form
// (compact JSON) and the request's hash. Each item is checked against the
// text rule on its own (jsontext.Scan, as the API checks a request body):
// one that breaks it is returned failed, with validation_failed and the
// detail the single endpoint's 422 gives, its field named within the item.
func (in *CreateInput) validate() ([]submitted, string, error) {
	if in.IdempotencyKey == "" || utf8.RuneCountInString(in.IdempotencyKey) > MaxKeyLen ||
		!riverbank.ValidText(in.IdempotencyKey) || strings.ContainsRune(in.IdempotencyKey, utf8.RuneError) {
		return nil, "", invalid("idempotency_key is required: 1..%d characters of valid UTF-8 without NUL", MaxKeyLen).WithDetail("field", "idempotency_key")
	}
	if !slices.Contains(Operations, in.Operation) {
		return nil, "", invalid("operation must be one of %s", strings.Join(Operations, ", ")).WithDetail("field", "operation")
	}
	if len(in.Items) < 1 || len(in.Items) > MaxItems {
		return nil, "", invalid("items must have 1..%d items", MaxItems).WithDetail("field", "items")
	}
	h := sha256.New()
	h.Write([]byte(in.Operation))
	out := make([]submitted, len(in.Items))
	var buf bytes.Buffer
	for i, raw := range in.Items {
		buf.Reset()
		if err := json.Compact(&buf, raw); err != nil || buf.Len() == 0 || buf.Bytes()[0] != '{' {
			return nil, "", invalid("items[%d] must be a JSON object (the body of the %s endpoint)", i, in.Operation).WithDetail("field", fmt.Sprintf("items[%d]", i))
		}
		// The hash is over the bytes as sent (compacted), invalid UTF-8
		// included: two items that differ only in their invalid bytes are
		// different payloads.
		b := buf.Bytes()
		h.Write([]byte{'\n'})
		h.Write(b)
		v := jsontext.Scan(b)
		if v == nil && !utf8.Valid(b) {
			// Unreachable: in valid JSON only strings can hold invalid
			// UTF-8, and the scan reads every string. Should it happen,
			// the item must still not run with U+FFFD in its text.
			v = &jsontext.Violation{Reason: "is not valid UTF-8"}
		}
		if v == nil {
			out[i] = submitted{payload: string(b)}
			continue
		}
		// Postgres refuses invalid UTF-8 in any text, json included
		// (escapes such as \u0000 and \ud800 it keeps as they are).
		out[i] = submitted{payload: string(bytes.ToValidUTF8(b, []byte("\uFFFD"))), failed: &ItemError{Code: riverbank.EINVALID, Detail: v.Detail()}}
	}
	return out, hex.EncodeToString(h.Sum(nil)), nil
}

// Create stores a batch and its items and inserts its chunk jobs in one
// transaction. It returns the batch and whether it was created now: the
// same idempotency_key with the same operation and items (compared as
// compact JSON, byte for byte) returns the stored batch with
// created=false, whatever it has done since; with another payload it is
// idempotency_conflict.
//
// An item that breaks the text rule is stored FAILED (validate) with a
// tally row counting it, in the same transaction, so the counters show it
// from the start. Every chunk still gets its job: a chunk whose items all
// failed at submission finds none pending and tries to complete the batch
// like any other, so a batch whose every item failed completes too (with
// one batch.completed, as always).
func (s *Service) Create(ctx context.Context, in CreateInput) (*Batch, bool, error) {
	items, hash, err := in.validate()
	if err != nil {
		return nil, false, err
	}
	var (
		out     *Batch
		created bool
	)
	err = s.store.InTx(ctx, func(tx *db.Tx) error {
		row, err := tx.InsertBatch(ctx, db.InsertBatchParams{
			IdempotencyKey: in.IdempotencyKey, RequestHash: hash, Operation: db.BatchOperation(in.Operation), Total: int32(len(items)),
		})
		if db.IsNotFound(err) {
			existing, err := tx.GetBatchByKey(ctx, in.IdempotencyKey)
			if err != nil {
				return fmt.Errorf("load batch by key: %w", err)
			}
			if existing.RequestHash != hash {
				return riverbank.Errorf(riverbank.EIDEMPOTENCYCONFLICT, "idempotency_key %q was used for a different batch (%d)", in.IdempotencyKey, existing.ID).
					WithDetail("batch_id", existing.ID)
			}
			out = batchFromRow(db.GetBatchRow(existing))
			return nil
		}
		if err != nil {
			return fmt.Errorf("insert batch: %w", err)
		}
		p := db.InsertBatchItemsParams{BatchID: row.ID, Payloads: make([]string, len(items)), ErrorCodes: make([]string, len(items)), ErrorDetails: make([]string, len(items))}
		failed := 0
		for i, it := range items {
			p.Payloads[i] = it.payload
			if it.failed != nil {
				p.ErrorCodes[i], p.ErrorDetails[i] = it.failed.Code, storable(it.failed.Detail)
				failed++
			}
		}
		n, err := tx.InsertBatchItems(ctx, p)
		if err != nil {
			return fmt.Errorf("insert batch items: %w", err)
		}
		if int(n) != len(items) {
			return fmt.Errorf("insert batch items: %d of %d stored", n, len(items))
		}
		if failed > 0 {
			if err := tx.InsertBatchTally(ctx, db.InsertBatchTallyParams{BatchID: row.ID, Succeeded: 0, Failed: int32(failed)}); err != nil {
				return fmt.Errorf("insert batch tally: %w", err)
			}
		}
		params := make([]river.InsertManyParams, 0, (len(items)+s.chunkSize-1)/s.chunkSize)
		for from := 0; from < len(items); from += s.chunkSize {
			params = append(params, river.InsertManyParams{Args: ChunkArgs{BatchID: row.ID, From: from, To: min(from+s.chunkSize, len(items))}})
		}
		if _, err := tx.InsertMany(ctx, params); err != nil {
			return err
		}
		out, created = batchFromRow(db.GetBatchRow{ID: row.ID, IdempotencyKey: row.IdempotencyKey, RequestHash: row.RequestHash, Operation: row.Operation,
			Status: row.Status, Total: row.Total, CreatedAt: row.CreatedAt, CompletedAt: row.CompletedAt, CancelledAt: row.CancelledAt, Failed: int32(failed)}), true
		return nil
	})
	return out, created, err
}

// storable is an error detail Postgres text can hold: a message may quote
// client text (a field name, a key).
func storable(detail string) string {
	return strings.ToValidUTF8(strings.ReplaceAll(detail, "\x00", "\uFFFD"), "\uFFFD")
}

// Get returns a batch.
func (s *Service) Get(ctx context.Context, id int64) (*Batch, error) {
	r, err := s.store.Queries().GetBatch(ctx, id)
	if db.IsNotFound(err) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "batch %d not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get batch: %w", err)
	}
	return batchFromRow(r), nil
}

// Cancel stops a RUNNING batch: items not yet started are never started
// (they stay PENDING); items already running finish. Cancelling a
// CANCELLED batch returns it; a COMPLETED batch is invalid_transition.
func (s *Service) Cancel(ctx context.Context, id int64) (*Batch, error) {
	_, err := s.store.Queries().CancelBatch(ctx, id)
	if err == nil {
		return s.Get(ctx, id)
	}
	if !db.IsNotFound(err) {
		return nil, fmt.Errorf("cancel batch: %w", err)
	}
	b, err := s.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	if b.Status == StatusCompleted {
		return nil, riverbank.Errorf(riverbank.EINVALIDTRANSITION, "batch %d is COMPLETED: a completed batch cannot be cancelled", id).WithDetail("status", b.Status)
	}
	return b, nil
}

// ItemError is a failed item's error: the code and message its single
// endpoint would answer.
type ItemError struct {
	Code   string
	Detail string
}

// Item is one item's outcome.
type Item struct {
	Index      int
	Status     string
	ResultID   *int64
	Error      *ItemError
	FinishedAt *time.Time
}

// ItemFilter selects a page of a batch's items.
type ItemFilter struct {
	// Status is PENDING, SUCCEEDED, FAILED or empty for all.
	Status string
	// AfterIndex pages: items with a larger index (-1: from the first).
	AfterIndex int
	Limit      int
}

// Items returns a page of a batch's items in index order.
func (s *Service) Items(ctx context.Context, id int64, f ItemFilter) ([]Item, error) {
	p := db.ListBatchItemsParams{BatchID: id, AfterIdx: int32(max(f.AfterIndex, -1)), Lim: int32(f.Limit)}
	if f.Status != "" {
		st := db.BatchItemStatus(f.Status)
		if !st.Valid() {
			return nil, invalid("status must be PENDING, SUCCEEDED or FAILED").WithDetail("field", "status")
		}
		p.Status = &st
	}
	if _, err := s.Get(ctx, id); err != nil {
		return nil, err
	}
	rows, err := s.store.Queries().ListBatchItems(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("list batch items: %w", err)
	}
	out := make([]Item, len(rows))
	for i, r := range rows {
		it := Item{Index: int(r.Idx), Status: string(r.Status), ResultID: r.ResultID, FinishedAt: r.FinishedAt}
		if r.ErrorCode != nil {
			it.Error = &ItemError{Code: *r.ErrorCode}
			if r.ErrorDetail != nil {
				it.Error.Detail = *r.ErrorDetail
			}
		}
		out[i] = it
	}
	return out, nil
}
