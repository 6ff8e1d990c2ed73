package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/events"
	"riverbank/internal/ledger"
)

// groupSize is how many items one transaction does, by operation. A
// journal entry takes no lock that other writers wait for unless it is
// urgent (a shared per-account apply lock that ledger.apply's final step
// waits for) or large (per-account locks above ledger.LargeAmountMinor):
// plain entries share a transaction and its commit, and an urgent or
// large one runs in a transaction of its own (runsAlone), as long as the
// single endpoint would hold those locks. Held across a group, they would
// queue ledger.apply behind the whole group and every later writer behind
// ledger.apply, and two groups could wait on each other. 25: a group
// redone with savepoints (joined.go) then has one per entry, under
// Postgres's 64 cached subtransactions per backend, past which every other
// session's snapshots get slower; and of 10, 25, 50 and 100 it was the
// fastest (riverbank bench batches --single=false, 2-core machine).
// Orders, loans and repayments lock business rows (products in sku order,
// the credit line, the loan) until commit: one item per transaction holds
// those locks exactly as long as the single endpoint does, and two chunks
// can never wait on each other in a cycle.
var groupSize = map[string]int{OpJournalEntry: 25, OpOrder: 1, OpLoan: 1, OpRepayment: 1}

// ChunkResult says what one run of a chunk did.
type ChunkResult struct {
	Succeeded int
	Failed    int
	// Deferred are items left PENDING by an internal error, for the
	// chunk's next attempt.
	Deferred int
	// Completed is true when this run completed the batch.
	Completed bool
}

// ErrChunkUnfinished is wrapped by RunChunk's error when items of the
// chunk are still PENDING after a run (internal errors, or items another
// runner holds): River retries the chunk.
var ErrChunkUnfinished = errors.New("batch chunk unfinished")

// RunChunk does the pending items of one chunk (see the package comment
// for the guarantees). final is true on the job's last attempt: items that
// fail internally are then recorded FAILED (code internal) instead of
// being left for a retry, and items another runner holds are waited for
// instead of skipped, so the batch completes. An error means the chunk
// must run again; what was committed stays done.
func (s *Service) RunChunk(ctx context.Context, args ChunkArgs, final bool) (ChunkResult, error) {
	var res ChunkResult
	b, err := s.store.Queries().GetBatch(ctx, args.BatchID)
	if db.IsNotFound(err) {
		return res, nil
	}
	if err != nil {
		return res, fmt.Errorf("get batch: %w", err)
	}
	if string(b.Status) != StatusRunning {
		return res, nil
	}
	op := string(b.Operation)
	size := groupSize[op]
	if size == 0 {
		return res, fmt.Errorf("batch %d: unknown operation %q", b.ID, op)
	}
	add := func(g groupOutcome) {
		res.Succeeded += g.succeeded
		res.Failed += g.failed
		res.Deferred += g.deferred
	}
	after := args.From - 1
	for {
		g, err := s.runGroup(ctx, op, args, after, groupMode{size: size, final: final, joined: true})
		if errors.Is(err, errRedo) {
			g, err = s.runGroup(ctx, op, args, after, groupMode{size: size, final: final})
		}
		if err != nil && g.claimed > 0 && ctx.Err() == nil {
			// The group's transaction failed as a whole: redo its items
			// one per transaction, so one item cannot hold the others back.
			s.logger.Warn("batch: a group's transaction failed; redoing its items one per transaction", "batch_id", args.BatchID, "from", after+1, "to", g.last, "error", err)
			sub := args
			sub.To = g.last + 1
			if err := s.runSingly(ctx, op, sub, after, final, add); err != nil {
				return res, err
			}
			after = g.last
			continue
		}
		if err != nil {
			return res, err
		}
		if g.claimed == 0 {
			break
		}
		add(g)
		after = g.last
	}
	// Items another runner held (or left by an internal error) must be
	// done before the chunk is.
	left, err := s.store.Queries().CountChunkPending(ctx, db.CountChunkPendingParams{BatchID: args.BatchID, FromIdx: int32(args.From), ToIdx: int32(args.To)})
	if err != nil {
		return res, fmt.Errorf("count pending items: %w", err)
	}
	if left > 0 {
		return res, fmt.Errorf("batch %d items [%d, %d): %d still pending (%d deferred by internal errors): %w", args.BatchID, args.From, args.To, left, res.Deferred, ErrChunkUnfinished)
	}
	res.Completed, err = s.completeIfDone(ctx, args.BatchID)
	return res, err
}

// completeIfDone completes the batch if every item is recorded, appending
// batch.completed in the completing transaction. Every chunk run calls it
// after its last commit (and a run cut off before calling it is run again
// by River), so the batch completes once its last item is recorded.
func (s *Service) completeIfDone(ctx context.Context, batchID int64) (bool, error) {
	completed := false
	err := s.store.InTx(ctx, func(tx *db.Tx) error {
		r, err := tx.CompleteBatch(ctx, batchID)
		if db.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("complete batch: %w", err)
		}
		completed = true
		b := batchFromRow(db.GetBatchRow(r))
		return events.AppendTx(ctx, tx, events.BatchCompleted, "batch", events.ID(b.ID), b)
	})
	return completed && err == nil, err
}

// runSingly does the pending items of args after after one per
// transaction. A transaction that fails as a whole ends the run with its
// error (River retries the chunk), except on the last attempt, when the
// item is recorded FAILED internal in a transaction of its own.
func (s *Service) runSingly(ctx context.Context, op string, args ChunkArgs, after int, final bool, add func(groupOutcome)) error {
	for {
		g, err := s.runGroup(ctx, op, args, after, groupMode{size: 1, final: final})
		if err != nil && final && g.claimed == 1 && ctx.Err() == nil {
			s.logger.Error("batch: an item's transaction failed on the last attempt; recording it failed (internal)", "batch_id", args.BatchID, "index", g.last, "error", err)
			g, err = s.runGroup(ctx, op, ChunkArgs{BatchID: args.BatchID, From: g.last, To: g.last + 1}, g.last-1, groupMode{size: 1, final: final, failAll: true})
		}
		if err != nil {
			return err
		}
		if g.claimed == 0 {
			return nil
		}
		add(g)
		after = g.last
	}
}

type groupOutcome struct {
	claimed                     int
	last                        int
	succeeded, failed, deferred int
}

// internalDetail is what a failed item shows for an internal error; the
// cause is logged.
const internalDetail = "internal error"

// groupMode says how runGroup runs a group.
type groupMode struct {
	// size is how many items to claim (groupCut may do fewer).
	size int
	// final is the chunk's last attempt: claims wait for items another
	// runner holds, and internal errors fail the item.
	final bool
	// failAll records every claimed item FAILED internal without running
	// it.
	failAll bool
	// joined runs the domain calls in the group's transaction itself
	// rather than a savepoint each (see joined.go); the group answers
	// errRedo when an item needed its own rollback.
	joined bool
}

// runGroup claims up to m.size pending items of the chunk after index
// after, runs each through its domain function on the claiming
// transaction, and records their outcomes and tally in it. On error the
// transaction is rolled back; claimed and last still say what was claimed.
func (s *Service) runGroup(ctx context.Context, op string, args ChunkArgs, after int, m groupMode) (groupOutcome, error) {
	size, final := m.size, m.final
	var g groupOutcome
	err := s.store.InTx(ctx, func(tx *db.Tx) error {
		var rows []db.ClaimBatchItemsRow
		var err error
		if final {
			var waited []db.ClaimBatchItemsWaitRow
			waited, err = tx.ClaimBatchItemsWait(ctx, db.ClaimBatchItemsWaitParams{BatchID: args.BatchID, FromIdx: int32(args.From), ToIdx: int32(args.To), AfterIdx: int32(after), Lim: int32(size)})
			for _, w := range waited {
				rows = append(rows, db.ClaimBatchItemsRow(w))
			}
		} else {
			rows, err = tx.ClaimBatchItems(ctx, db.ClaimBatchItemsParams{BatchID: args.BatchID, FromIdx: int32(args.From), ToIdx: int32(args.To), AfterIdx: int32(after), Lim: int32(size)})
		}
		if err != nil {
			return fmt.Errorf("claim batch items: %w", err)
		}
		if len(rows) == 0 {
			return nil
		}
		// Items past the cut stay claimed until this transaction ends and
		// are claimed again by the next group.
		rows = rows[:groupCut(op, rows)]
		g.claimed, g.last = len(rows), int(rows[len(rows)-1].Idx)
		// The domain services sit on this transaction, so an item's effect
		// commits with its recorded outcome. Each call's own InTx is a
		// savepoint of it, so a failing item rolls back alone — or, joined,
		// is the group's transaction itself, watched by state.
		var exec db.Executor = tx.Tx
		state := &joinState{}
		if m.joined {
			exec = joined{Tx: tx.Tx, state: state}
		}
		d := s.domains(db.NewStore(exec, s.store.JobInserter()))
		p := db.RecordBatchItemsParams{BatchID: args.BatchID}
		record := func(idx int32, status string, resultID int64, code, detail string) {
			p.Idxs = append(p.Idxs, idx)
			p.Statuses = append(p.Statuses, status)
			p.ResultIds = append(p.ResultIds, resultID)
			p.ErrorCodes = append(p.ErrorCodes, code)
			p.ErrorDetails = append(p.ErrorDetails, storable(detail))
		}
		for _, r := range rows {
			if m.failAll {
				record(r.Idx, ItemFailed, 0, riverbank.EINTERNAL, internalDetail)
				continue
			}
			*state = joinState{}
			id, err := runItem(ctx, d, op, r.Payload)
			if m.joined && state.dirty(err) {
				return errRedo
			}
			if err == nil {
				record(r.Idx, ItemSucceeded, id, "", "")
				continue
			}
			if code, detail, ok := clientError(err); ok {
				record(r.Idx, ItemFailed, 0, code, detail)
				continue
			}
			s.logger.Error("batch: item failed internally", "batch_id", args.BatchID, "index", r.Idx, "operation", op, "final_attempt", final, "error", err)
			if final {
				record(r.Idx, ItemFailed, 0, riverbank.EINTERNAL, internalDetail)
				continue
			}
			g.deferred++
		}
		if len(p.Idxs) == 0 {
			return nil
		}
		recorded, err := tx.RecordBatchItems(ctx, p)
		if err != nil {
			return fmt.Errorf("record batch items: %w", err)
		}
		if int(recorded) != len(p.Idxs) {
			// Only this transaction holds the claimed rows: a mismatch is
			// a bug, and committing would make the counters lie.
			return fmt.Errorf("record batch items: %d of %d recorded", recorded, len(p.Idxs))
		}
		for _, st := range p.Statuses {
			if st == ItemSucceeded {
				g.succeeded++
			} else {
				g.failed++
			}
		}
		return nil
	})
	if err != nil {
		return groupOutcome{claimed: g.claimed, last: g.last}, err
	}
	return g, nil
}

// groupCut returns how many of the claimed rows one transaction does: all
// of them, except that an item that must run alone ends the group before
// it, or is the whole group when it comes first.
func groupCut(op string, rows []db.ClaimBatchItemsRow) int {
	if op != OpJournalEntry || len(rows) == 1 {
		return len(rows)
	}
	if runsAlone(rows[0].Payload) {
		return 1
	}
	for i := 1; i < len(rows); i++ {
		if runsAlone(rows[i].Payload) {
			return i
		}
	}
	return len(rows)
}

// runsAlone reports whether a journal entry item takes locks that must
// not be held across other items: urgent, or a posting large enough that
// the entry may net more than ledger.LargeAmountMinor on an account. An
// item that does not decode runs with the others (it fails validation).
func runsAlone(payload []byte) bool {
	var e struct {
		Urgent   bool `json:"urgent"`
		Postings []struct {
			AmountMinor int64 `json:"amount_minor"`
		} `json:"postings"`
	}
	if json.Unmarshal(payload, &e) != nil {
		return false
	}
	if e.Urgent {
		return true
	}
	for _, p := range e.Postings {
		if p.AmountMinor > ledger.LargeAmountMinor/ledger.MaxPostings || p.AmountMinor < -ledger.LargeAmountMinor/ledger.MaxPostings {
			return true
		}
	}
	return false
}
