// Package events is riverbank's domain events feed (SPEC §8): every state
// change appends one event in the transaction that makes it (AppendTx —
// no dual write, no CDC), and GET /v1/events serves the feed in commit-
// visible order, gap-free, with long-polling.
//
// # Why (txid, id) below the snapshot xmin is gap-free
//
// An event row carries the id of the transaction that wrote it (txid,
// pg_current_xact_id()) and an identity id. A reader serves only events
// whose txid is below the xmin of its statement's snapshot, ordered and
// paged by (txid, id). Every transaction with an id below xmin has ended
// (committed or aborted) — that is what xmin means — so the set of events
// below xmin can never grow again: no transaction that could still commit
// has a txid there, and a transaction that starts later gets a larger id.
// A reader that has passed position (t, i) has therefore seen every event
// that will ever exist at or before it. A bigserial alone fails this: ids
// are drawn before commit, so a slow transaction's event could appear
// behind a cursor that already moved past it. Events of one transaction
// share a txid and come in id order. The price: a long-running transaction
// (any, even one that writes no event) holds xmin back and delays the feed
// until it ends — the feed trades latency for never skipping.
package events

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/queue"
)

// Event types: every state change of SPEC §8.
const (
	OrderCreated        = "order.created"
	OrderConfirmed      = "order.confirmed"
	OrderPaid           = "order.paid"
	OrderShipped        = "order.shipped"
	OrderCompleted      = "order.completed"
	OrderCancelled      = "order.cancelled"
	ProductStockSet     = "product.stock_set"
	JournalEntryPosted  = "journal_entry.posted"
	LoanCreated         = "loan.created"
	LoanOverdue         = "loan.overdue"
	LoanRepaid          = "loan.repaid"
	RepaymentAccepted   = "repayment.accepted"
	CreditLineChanged   = "credit_line.changed"
	CreditLineRestored  = "credit_line.restored"
	CaseOpened          = "case.opened"
	CaseUpdated         = "case.updated"
	CaseClosed          = "case.closed"
	COBRunCompleted     = "cob_run.completed"
	BatchCompleted      = "batch.completed"
	channel             = "riverbank_events"
	maxLimit            = 500
	pendingRecheck      = 50 * time.Millisecond
	fallbackRecheck     = 5 * time.Second
	deleteBatch         = 5000
	defaultRetention    = 30 * 24 * time.Hour
	subjectIDMaxLen     = 200
	typeMaxLen          = 64
	cursorVersionPrefix = "e1:"
)

// Types lists every event type, for validation of filters.
var Types = []string{OrderCreated, OrderConfirmed, OrderPaid, OrderShipped, OrderCompleted, OrderCancelled, ProductStockSet,
	JournalEntryPosted, LoanCreated, LoanOverdue, LoanRepaid, RepaymentAccepted, CreditLineChanged, CreditLineRestored,
	CaseOpened, CaseUpdated, CaseClosed, COBRunCompleted, BatchCompleted}

// Renderer turns a domain value into the resource the API shows for it,
// so an event's data is exactly what GET on the resource returns. The
// HTTP layer registers it (SetRenderer); without one, values are encoded
// as they are.
type Renderer func(v any) (any, error)

var renderer atomic.Pointer[Renderer]

// SetRenderer registers the renderer of event data (the api package does,
// at init).
func SetRenderer(r Renderer) { renderer.Store(&r) }

// Data encodes v as an event's data.
func Data(v any) ([]byte, error) {
	if r := renderer.Load(); r != nil {
		out, err := (*r)(v)
		if err != nil {
			return nil, fmt.Errorf("render event data: %w", err)
		}
		v = out
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode event data: %w", err)
	}
	return b, nil
}

// AppendTx appends one event in the caller's transaction: it commits or
// rolls back with the change it describes. subject is the resource's id.
// Readers are woken once the transaction has committed (wake).
func AppendTx(ctx context.Context, tx *db.Tx, typ, subjectType, subjectID string, resource any) error {
	if appendsOff.Load() {
		return nil
	}
	data, err := Data(resource)
	if err != nil {
		return err
	}
	if _, err := tx.AppendEvent(ctx, db.AppendEventParams{Type: typ, SubjectType: subjectType, SubjectID: subjectID, Data: data}); err != nil {
		return fmt.Errorf("append event %s: %w", typ, err)
	}
	tx.AfterCommit(wake)
	return nil
}

// appendsOff makes AppendTx and AppendMany do nothing. Only `riverbank bench
// events` sets it (in its own process), to measure what the feed costs the
// writes that feed it; there is deliberately no configuration for it, because
// a riverbank without its feed breaks the §8 contract.
var appendsOff atomic.Bool

// DisableAppendsForBenchmark turns event appends off (true) or back on in
// this process. Benchmarks only.
func DisableAppendsForBenchmark(off bool) { appendsOff.Store(off) }

// On reports whether events are appended (see DisableAppendsForBenchmark).
// Statements that append their own event (InsertOrder, ApplyTransition)
// ask it.
func On() bool { return !appendsOff.Load() }

// Appended is for a statement that appended events itself in tx: readers
// are woken once tx has committed, as after AppendTx.
func Appended(tx *db.Tx) { tx.AfterCommit(wake) }

// StoredRenderer renders the data of an event stored as a database row
// (data_kind, schema step 10) into the API body.
type StoredRenderer func(kind string, data []byte) (any, error)

var storedRenderer atomic.Pointer[StoredRenderer]

// SetStoredRenderer registers the renderer of stored rows (the api package
// does, at init).
func SetStoredRenderer(r StoredRenderer) { storedRenderer.Store(&r) }

// Body is an event's data as consumers get it: data itself, or, for an
// event stored as a row (kind not nil), the API body rendered from it.
func Body(kind *string, data []byte) (json.RawMessage, error) {
	if kind == nil {
		return data, nil
	}
	r := storedRenderer.Load()
	if r == nil {
		return nil, fmt.Errorf("event data of kind %s: no renderer registered", *kind)
	}
	v, err := (*r)(*kind, data)
	if err != nil {
		return nil, fmt.Errorf("render event data of kind %s: %w", *kind, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode event data of kind %s: %w", *kind, err)
	}
	return b, nil
}

// wakeups carries "an event committed in this process" to the hub's
// notifier, coalesced: one pending wake-up stands for any number.
var wakeups = make(chan struct{}, 1)

func wake() {
	select {
	case wakeups <- struct{}{}:
	default:
	}
}

// AppendMany appends one event of type typ per resource, in one statement
// (ids[i] is resources[i]'s subject id).
func AppendMany(ctx context.Context, tx *db.Tx, typ, subjectType string, ids []string, resources []any) error {
	if len(ids) == 0 || appendsOff.Load() {
		return nil
	}
	datas := make([][]byte, len(resources))
	for i, r := range resources {
		var err error
		if datas[i], err = Data(r); err != nil {
			return err
		}
	}
	if err := tx.AppendEvents(ctx, db.AppendEventsParams{Type: typ, SubjectType: subjectType, SubjectIds: ids, Datas: datas}); err != nil {
		return fmt.Errorf("append %d events %s: %w", len(ids), typ, err)
	}
	tx.AfterCommit(wake)
	return nil
}

// ID formats an integer subject id.
func ID(id int64) string { return strconv.FormatInt(id, 10) }

// Event is one event of the feed.
type Event struct {
	ID          int64
	TxID        int64
	Type        string
	SubjectType string
	SubjectID   string
	OccurredAt  time.Time
	Data        json.RawMessage
}

// Cursor is a position in the feed: after the event (TxID, ID), which
// occurred at OccurredAt (for the retention check). The zero cursor is the
// start of the feed.
type Cursor struct {
	TxID       int64
	ID         int64
	OccurredAt time.Time
}

// IsZero reports whether c is the start of the feed.
func (c Cursor) IsZero() bool { return c.TxID == 0 && c.ID == 0 }

// Encode returns the opaque cursor string.
func (c Cursor) Encode() string {
	if c.IsZero() {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(fmt.Sprintf("%s%d.%d.%d", cursorVersionPrefix, c.TxID, c.ID, c.OccurredAt.UnixMicro())))
}

func badCursor() error {
	return riverbank.Errorf(riverbank.EINVALID, "after is not a valid cursor: pass next_cursor from a previous page unchanged").WithDetail("field", "after")
}

// DecodeCursor parses an opaque cursor ("" is the start of the feed).
func DecodeCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || !strings.HasPrefix(string(b), cursorVersionPrefix) {
		return Cursor{}, badCursor()
	}
	parts := strings.Split(strings.TrimPrefix(string(b), cursorVersionPrefix), ".")
	if len(parts) != 3 {
		return Cursor{}, badCursor()
	}
	var n [3]int64
	for i, p := range parts {
		if n[i], err = strconv.ParseInt(p, 10, 64); err != nil || n[i] <= 0 {
			return Cursor{}, badCursor()
		}
	}
	return Cursor{TxID: n[0], ID: n[1], OccurredAt: time.UnixMicro(n[2]).UTC()}, nil
}

// Hub wakes long-polling readers when an event commits: one connection
// LISTENs for the whole process and fans the notification out in memory,
// instead of one listening connection per waiting request.
type Hub struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
	mu     sync.Mutex
	ch     chan struct{}
	up     atomic.Bool
	// downSince is when the LISTEN connection was lost (zero while up);
	// only Run's goroutine touches it.
	downSince time.Time
	failures  int
}

// NewHub returns a hub on pool; Run starts listening.
func NewHub(pool *pgxpool.Pool, logger *slog.Logger) *Hub {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Hub{pool: pool, logger: logger, ch: make(chan struct{})}
}

// Changed returns a channel closed at the next notification. Take it
// before reading the feed, so a commit between the read and the wait is
// not missed.
func (h *Hub) Changed() <-chan struct{} {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ch
}

// Up reports whether the hub is listening now.
func (h *Hub) Up() bool { return h.up.Load() }

func (h *Hub) broadcast() {
	h.mu.Lock()
	close(h.ch)
	h.ch = make(chan struct{})
	h.mu.Unlock()
}

// Run listens until ctx ends, reconnecting with backoff when the
// connection drops (readers fall back to a slow re-check meanwhile). It
// logs a lost connection once, not once per retry, and its return with
// how long it was away and how many attempts failed. It also sends this
// process's wake-ups (notify).
func (h *Hub) Run(ctx context.Context) {
	go h.notify(ctx)
	backoff := 100 * time.Millisecond
	logged := false
	for ctx.Err() == nil {
		wasUp, err := h.listen(ctx)
		h.up.Store(false)
		if ctx.Err() != nil {
			return
		}
		if wasUp {
			backoff, logged = 100*time.Millisecond, false
		}
		h.failures++
		if !logged {
			h.logger.Warn("events: the LISTEN connection is down; reconnecting (long-polls re-check every second meanwhile)", "error", err)
			logged = true
			h.downSince = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// NotifyInterval is the least time between two of this process's
// NOTIFYs. Every NOTIFY is a transaction that takes Postgres's one
// server-wide notification lock; sent after every commit, they halved the
// urgent journal entries a 2-core server accepted (riverbank bench ledger:
// 719 entries/s without the feed, 354 with a NOTIFY per commit, 661 with
// none; docs/benchmarks.md). Coalescing commits into at most one NOTIFY
// per interval costs a long-poll at most this much extra latency.
const NotifyInterval = 25 * time.Millisecond

// notify turns this process's commits of events into NOTIFYs, outside the
// writing transactions: at most one per NotifyInterval, however many
// commits arrived meanwhile. Every process's hub LISTENs, so readers
// anywhere wake. A failed NOTIFY is not retried: readers re-check on their
// own within seconds.
func (h *Hub) notify(ctx context.Context) {
	q := db.New(h.pool)
	for {
		select {
		case <-ctx.Done():
			return
		case <-wakeups:
		}
		sent := time.Now()
		nctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := q.NotifyEvents(nctx); err != nil && ctx.Err() == nil {
			h.logger.Debug("events: notify failed", "error", err)
		}
		cancel()
		// Commits that arrive until the interval has passed share the
		// next NOTIFY (wakeups holds one pending wake-up).
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(sent.Add(NotifyInterval))):
		}
	}
}

func (h *Hub) listen(ctx context.Context) (bool, error) {
	conn, err := h.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	defer func() {
		// The connection's session state (LISTEN) must not go back to the
		// pool.
		conn.Hijack().Close(context.WithoutCancel(ctx))
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		return false, err
	}
	h.up.Store(true)
	if !h.downSince.IsZero() {
		h.logger.Info("events: the LISTEN connection is back", "down_for", time.Since(h.downSince).Round(time.Millisecond).String(), "failed_attempts", h.failures)
		h.downSince, h.failures = time.Time{}, 0
	}
	// Anything committed while we were not listening wakes readers now.
	h.broadcast()
	for {
		if _, err := conn.Conn().WaitForNotification(ctx); err != nil {
			return true, err
		}
		h.broadcast()
	}
}

// Options configure the feed.
type Options struct {
	// Hub wakes long-polls; without one they re-check periodically.
	Hub *Hub
	// Retention is how long events stay (default 30 days).
	Retention time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Feed reads the events feed.
type Feed struct {
	store     *db.Store
	hub       *Hub
	retention time.Duration
	now       func() time.Time
}

// NewFeed returns a feed reader on store.
func NewFeed(store *db.Store, opts Options) *Feed {
	f := &Feed{store: store, hub: opts.Hub, retention: opts.Retention, now: opts.Now}
	if f.retention <= 0 {
		f.retention = defaultRetention
	}
	if f.now == nil {
		f.now = time.Now
	}
	return f
}

// SetHub attaches the process's hub (built once the pool runs).
func (f *Feed) SetHub(h *Hub) { f.hub = h }

// Query is one read of the feed.
type Query struct {
	After     Cursor
	Limit     int
	Type      string
	SubjectID string
	// Wait is how long an empty page may long-poll (0..30s).
	Wait time.Duration
}

// MaxWait bounds a long-poll.
const MaxWait = 30 * time.Second

// Read returns a page of the feed after q.After and the cursor to read on
// from. With Wait, an empty page waits until an event commits (or the
// wait ends). A cursor older than the retention is 410 cursor_expired.
func (f *Feed) Read(ctx context.Context, q Query) ([]Event, Cursor, error) {
	if q.Limit <= 0 || q.Limit > maxLimit {
		q.Limit = 50
	}
	if q.Wait < 0 || q.Wait > MaxWait {
		return nil, q.After, riverbank.Errorf(riverbank.EINVALID, "wait must be between 0 and 30s").WithDetail("field", "wait")
	}
	if q.Type != "" && len(q.Type) > typeMaxLen {
		return nil, q.After, riverbank.Errorf(riverbank.EINVALID, "type is too long").WithDetail("field", "type")
	}
	if len(q.SubjectID) > subjectIDMaxLen || !riverbank.ValidText(q.SubjectID) || !riverbank.ValidText(q.Type) {
		return nil, q.After, riverbank.Errorf(riverbank.EINVALID, "subject_id and type must be valid text of at most %d characters", subjectIDMaxLen)
	}
	if !q.After.IsZero() && q.After.OccurredAt.Before(f.now().Add(-f.retention)) {
		return nil, q.After, riverbank.Errorf(riverbank.ECURSOREXPIRED, "the cursor points at an event older than the retention (%s): events before it may have been dropped; start again without after", f.retention)
	}
	deadline := f.now().Add(q.Wait)
	for {
		var changed <-chan struct{}
		if f.hub != nil {
			changed = f.hub.Changed()
		}
		evs, err := f.read(ctx, q)
		if err != nil || len(evs) > 0 || q.Wait == 0 {
			next := q.After
			if len(evs) > 0 {
				last := evs[len(evs)-1]
				next = Cursor{TxID: last.TxID, ID: last.ID, OccurredAt: last.OccurredAt}
			}
			return evs, next, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return evs, q.After, nil
		}
		// Events exist that are not servable yet (an older transaction is
		// still open): re-read soon, since the transaction holding xmin back
		// may write no event and so notify nobody.
		recheck := fallbackRecheck
		if f.hub == nil || !f.hub.up.Load() {
			recheck = time.Second
		}
		pending, err := f.store.Queries().PendingEventsExist(ctx, db.PendingEventsExistParams{AfterTxid: q.After.TxID, AfterID: q.After.ID})
		if err != nil {
			return nil, q.After, fmt.Errorf("check pending events: %w", err)
		}
		if pending {
			recheck = pendingRecheck
		}
		timer := time.NewTimer(min(left, recheck))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, q.After, ctx.Err()
		case <-changed:
		case <-timer.C:
		}
		timer.Stop()
	}
}

func (f *Feed) read(ctx context.Context, q Query) ([]Event, error) {
	p := db.ReadEventsParams{AfterTxid: q.After.TxID, AfterID: q.After.ID, Lim: int32(q.Limit)}
	if q.Type != "" {
		p.Type = &q.Type
	}
	if q.SubjectID != "" {
		p.SubjectID = &q.SubjectID
	}
	rows, err := f.store.Queries().ReadEvents(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	out := make([]Event, len(rows))
	for i, r := range rows {
		data, err := Body(r.DataKind, r.Data)
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", r.ID, err)
		}
		out[i] = Event{ID: r.ID, TxID: r.Txid, Type: r.Type, SubjectType: r.SubjectType, SubjectID: r.SubjectID, OccurredAt: r.OccurredAt, Data: data}
	}
	return out, nil
}

// PruneArgs are the args of the periodic events.prune job.
type PruneArgs struct{}

// Kind implements river.JobArgs.
func (PruneArgs) Kind() string { return "events.prune" }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (PruneArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: queue.Maintenance, MaxAttempts: 3}
}

// Prune drops events older than the retention in batches of a few
// thousand rows, each its own short transaction, so no lock is held long
// and vacuum keeps up. It returns how many it dropped.
func (f *Feed) Prune(ctx context.Context) (int64, error) {
	cutoff := f.now().Add(-f.retention)
	var total int64
	for {
		n, err := f.store.Queries().DeleteExpiredEvents(ctx, db.DeleteExpiredEventsParams{Cutoff: cutoff, Lim: deleteBatch})
		if err != nil {
			return total, fmt.Errorf("delete expired events: %w", err)
		}
		total += n
		if n < deleteBatch || ctx.Err() != nil {
			return total, ctx.Err()
		}
	}
}
