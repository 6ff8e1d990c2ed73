// Package deadletter lets operators see and retry riverbank's dead letters.
//
// River's discarded state is the dead-letter queue: a job whose worker keeps
// failing (credit.restore after RIVERBANK_CREDIT_RESTORE_MAX_ATTEMPTS, or
// any kind after its max_attempts) is set to `discarded` by River and stays
// in river_job with its args and every attempt's error. Nothing is copied to
// another table, so the API, the riverbank_dead_letters gauge and the River
// UI all show the same rows. River's job cleaner deletes discarded jobs
// after its DiscardedJobRetentionPeriod (7 days unless the River client
// config says otherwise), so a dead letter nobody retries is gone after
// that. A retry goes through River's own API (JobRetryTx), never an UPDATE
// of river_job, so River's rules (state, scheduled_at, max_attempts bumped
// when exhausted, cancel flag cleared) apply as they do for a retry from
// the River UI.
package deadletter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river/rivertype"

	"riverbank"
	"riverbank/internal/db"
)

// Page sizes of List; the API's list endpoints share the same bounds.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// KindPattern is the shape of every job kind riverbank uses (ledger.apply,
// order.confirm, credit.restore, …). A kind filter of another shape cannot
// match a riverbank job, so it is a client error rather than an empty page
// that hides a typo. The API declares the same pattern on its parameter.
const KindPattern = `^[a-z0-9_.]{1,64}$`

var kindPattern = regexp.MustCompile(KindPattern)

// JobRetrier is the part of a River client a retry needs: River's own retry
// on the caller's transaction, so the state check (LockJobState) and the
// retry are one atomic step. *river.Client[pgx.Tx] satisfies it, including
// the insert-only client the store is built with (JobRetryTx only needs the
// transaction, not a started client).
type JobRetrier interface {
	JobRetryTx(ctx context.Context, tx pgx.Tx, id int64) (*rivertype.JobRow, error)
}

// Service lists, reads and retries dead letters.
type Service struct {
	store   *db.Store
	retrier JobRetrier
}

// NewService returns the dead-letter service on store. retrier is normally
// the store's own River client (see domains.New); with nil, Retry fails with
// an internal error while List and Get still work, so a process or test
// wired with another job inserter keeps its read-only views.
func NewService(store *db.Store, retrier JobRetrier) *Service {
	return &Service{store: store, retrier: retrier}
}

// Job is a River job as the dead-letter views show it: discarded in List and
// Get, and in whatever state River left it after Retry (available).
type Job struct {
	ID    int64
	Kind  string
	Queue string
	// State is River's job state.
	State string
	// Args are the job's args exactly as River stored them (a JSON object),
	// so an operator sees what the worker saw.
	Args        json.RawMessage
	Attempt     int
	MaxAttempts int
	// Errors are the errors of every attempt, oldest first.
	Errors []AttemptError
	// DiscardedAt is River's finalized_at: when River discarded the job.
	// Nil once the job has been retried.
	DiscardedAt *time.Time
	CreatedAt   time.Time
}

// AttemptError is the error one attempt of a job ended with. River's panic
// stack trace is left out: it is in the River UI, and it is noise in an
// API listing.
type AttemptError struct {
	Attempt int
	At      time.Time
	Error   string
}

// Cursor is the keyset position List continues after: the last job of the
// previous page, ordered by (DiscardedAt, ID) descending.
type Cursor struct {
	DiscardedAt time.Time
	ID          int64
}

// ListParams select a page of dead letters.
type ListParams struct {
	// Kind, when not empty, keeps only jobs of that kind; it must match
	// KindPattern.
	Kind string
	// After continues after the last job of a previous page; nil is the
	// first page.
	After *Cursor
	// Limit is the page size (DefaultLimit when 0, at most MaxLimit).
	Limit int
}

// List returns discarded jobs of every kind (or of p.Kind), newest
// discarded first, one keyset page at a time.
func (s *Service) List(ctx context.Context, p ListParams) ([]*Job, error) {
	limit := p.Limit
	switch {
	case limit < 0:
		return nil, riverbank.Errorf(riverbank.EINVALID, "limit must be between 1 and %d", MaxLimit)
	case limit == 0:
		limit = DefaultLimit
	case limit > MaxLimit:
		limit = MaxLimit
	}
	params := db.ListDeadLettersParams{MaxRows: int32(limit)}
	if p.Kind != "" {
		if !kindPattern.MatchString(p.Kind) {
			return nil, riverbank.Errorf(riverbank.EINVALID, "kind must match %s", KindPattern)
		}
		params.Kind = &p.Kind
	}
	if p.After != nil {
		if p.After.ID <= 0 {
			return nil, riverbank.Errorf(riverbank.EINVALID, "cursor is not valid")
		}
		params.BeforeFinalizedAt, params.BeforeID = &p.After.DiscardedAt, &p.After.ID
	}
	rows, err := s.store.Queries().ListDeadLetters(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	out := make([]*Job, len(rows))
	for i, r := range rows {
		if out[i], err = fromRow(db.GetJobRow(r)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Get returns one dead letter. A job that exists but is not discarded is
// not a dead letter: not_found, with its state in the details so an
// operator who just retried it knows where it went.
func (s *Service) Get(ctx context.Context, id int64) (*Job, error) {
	row, err := s.store.Queries().GetJob(ctx, id)
	if db.IsNotFound(err) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "job %d not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get job %d: %w", id, err)
	}
	if row.State != db.RiverJobStateDiscarded {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "job %d is not a dead letter (state %s)", id, row.State).
			WithDetail("state", string(row.State))
	}
	return fromRow(row)
}

// Retry makes one discarded job available again through River's
// JobRetryTx and returns the job as River left it.
//
// River's retry works on a job in any state but running (it would make a
// completed or scheduled job run now), so the state is checked first, in
// the same transaction, on the row locked FOR UPDATE (LockJobState): a
// second retry of the same job racing this one waits on the lock, then
// reads the committed state (available, or running once a worker has it)
// and fails with not_discarded. So of any number of concurrent retries of
// one discard exactly one succeeds, and the job is re-queued once (its
// max_attempts raised once); only after River discards it again can it be
// retried again. A job that
// does not exist is not_found; one that exists in another state is
// not_discarded. Neither writes anything.
func (s *Service) Retry(ctx context.Context, id int64) (*Job, error) {
	if s.retrier == nil {
		return nil, errors.New("retry dead letter: no River client to retry with")
	}
	return db.InTxV(ctx, s.store, func(tx *db.Tx) (*Job, error) {
		locked, err := tx.LockJobState(ctx, id)
		if db.IsNotFound(err) {
			return nil, riverbank.Errorf(riverbank.ENOTFOUND, "job %d not found", id)
		}
		if err != nil {
			return nil, fmt.Errorf("lock job %d: %w", id, err)
		}
		if locked.State != db.RiverJobStateDiscarded {
			return nil, riverbank.Errorf(riverbank.ENOTDISCARDED, "job %d is %s, not discarded: only dead letters can be retried", id, locked.State).
				WithDetail("state", string(locked.State))
		}
		row, err := s.retrier.JobRetryTx(ctx, tx.Tx, id)
		if db.IsUniqueViolation(err, "river_job_unique_idx") {
			// A unique job (e.g. one per loan) whose successor is already
			// live: River refuses two live jobs with one unique key.
			return nil, riverbank.Errorf(riverbank.ECONFLICT, "job %d cannot be retried: a live %s job with the same unique key exists", id, locked.Kind)
		}
		if err != nil {
			return nil, fmt.Errorf("retry job %d: %w", id, err)
		}
		return fromJobRow(row), nil
	})
}

func fromRow(r db.GetJobRow) (*Job, error) {
	j := &Job{ID: r.ID, Kind: r.Kind, Queue: r.Queue, State: string(r.State), Args: json.RawMessage(r.Args),
		Attempt: int(r.Attempt), MaxAttempts: int(r.MaxAttempts), DiscardedAt: r.FinalizedAt, CreatedAt: r.CreatedAt,
		Errors: make([]AttemptError, 0, len(r.Errors))}
	for _, raw := range r.Errors {
		var e rivertype.AttemptError
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("decode error of job %d: %w", r.ID, err)
		}
		j.Errors = append(j.Errors, AttemptError{Attempt: e.Attempt, At: e.At, Error: e.Error})
	}
	return j, nil
}

func fromJobRow(r *rivertype.JobRow) *Job {
	j := &Job{ID: r.ID, Kind: r.Kind, Queue: r.Queue, State: string(r.State), Args: json.RawMessage(r.EncodedArgs),
		Attempt: r.Attempt, MaxAttempts: r.MaxAttempts, DiscardedAt: r.FinalizedAt, CreatedAt: r.CreatedAt,
		Errors: make([]AttemptError, 0, len(r.Errors))}
	for _, e := range r.Errors {
		j.Errors = append(j.Errors, AttemptError{Attempt: e.Attempt, At: e.At, Error: e.Error})
	}
	return j
}
