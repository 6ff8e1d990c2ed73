package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"riverbank"
	"riverbank/internal/deadletter"
)

// DeadLetterBody is a River job as the dead-letter endpoints show it:
// discarded when listed or read, available after a retry.
type DeadLetterBody struct {
	ID          int64              `json:"id" doc:"River job id (the same in the River UI)."`
	Kind        string             `json:"kind" example:"credit.restore"`
	Queue       string             `json:"queue" example:"default"`
	State       string             `json:"state" enum:"available,cancelled,completed,discarded,pending,retryable,running,scheduled" doc:"River state: discarded for a dead letter, available right after a retry."`
	Args        json.RawMessage    `json:"args" doc:"The job's args exactly as River stored them (a JSON object)."`
	Attempt     int                `json:"attempt" doc:"Attempts made so far."`
	MaxAttempts int                `json:"max_attempts" doc:"Attempts River allows; a retry of an exhausted job raises it by one."`
	Errors      []AttemptErrorBody `json:"errors" doc:"Every attempt's error, oldest first."`
	DiscardedAt *time.Time         `json:"discarded_at,omitempty" doc:"When River discarded the job (its finalized_at); absent once retried."`
	CreatedAt   time.Time          `json:"created_at"`
}

// AttemptErrorBody is the error one attempt of a job ended with.
type AttemptErrorBody struct {
	Attempt int       `json:"attempt"`
	At      time.Time `json:"at"`
	Error   string    `json:"error" doc:"The error the worker returned (or its panic value)."`
}

func deadLetterBody(j *deadletter.Job) DeadLetterBody {
	out := DeadLetterBody{ID: j.ID, Kind: j.Kind, Queue: j.Queue, State: j.State, Args: j.Args, Attempt: j.Attempt,
		MaxAttempts: j.MaxAttempts, Errors: make([]AttemptErrorBody, len(j.Errors)), DiscardedAt: j.DiscardedAt, CreatedAt: j.CreatedAt}
	for i, e := range j.Errors {
		out.Errors[i] = AttemptErrorBody(e)
	}
	return out
}

// The kind pattern is deadletter.KindPattern (a struct tag cannot name a
// constant); the domain checks it again for callers other than the API.
type listDeadLettersInput struct {
	Kind string `query:"kind" pattern:"^[a-z0-9_.]{1,64}$" doc:"Only jobs of this kind, e.g. credit.restore." example:"credit.restore"`
	PageParams
}

type listDeadLettersOutput struct {
	Body struct {
		DeadLetters []DeadLetterBody `json:"dead_letters"`
		NextCursor  string           `json:"next_cursor,omitempty"`
	}
}

type deadLetterIDInput struct {
	JobID int64 `path:"job_id" minimum:"1" doc:"River job id."`
}

type deadLetterOutput struct {
	Body DeadLetterBody
}

func (h *handlers) registerDeadLetters(api huma.API) {
	tags := []string{"Dead letters"}
	huma.Register(api, huma.Operation{OperationID: "list-dead-letters", Method: http.MethodGet, Path: "/v1/dead-letters", Summary: "List discarded River jobs, newest discarded first", Tags: tags,
		Description: "River's discarded jobs of every kind (or of `kind`): jobs whose attempts ran out, e.g. credit.restore after RIVERBANK_CREDIT_RESTORE_MAX_ATTEMPTS. " +
			"They stay in River's job table (the River UI shows the same jobs); nothing is copied. Ordered by discarded_at, then id, descending; pass next_cursor to get the next page. " +
			"A kind that is not a job kind's shape or a cursor not from a previous page is 422 validation_failed.",
	}, h.listDeadLetters)
	huma.Register(api, huma.Operation{OperationID: "get-dead-letter", Method: http.MethodGet, Path: "/v1/dead-letters/{job_id}", Summary: "Get one discarded River job", Tags: tags,
		Description: "404 not_found when no job has this id or the job is not discarded (e.g. after a retry; `details.state` then names its state).",
		Metadata:    answers(codes(riverbank.ENOTFOUND), nil)}, h.getDeadLetter)
	huma.Register(api, huma.Operation{OperationID: "retry-dead-letter", Method: http.MethodPost, Path: "/v1/dead-letters/{job_id}/retry", Summary: "Re-queue a discarded River job", Tags: tags,
		Description: "Makes the job available to work now through River's own retry (max_attempts is raised by one when exhausted) and answers 200 with the job as it is after the retry. " +
			"Only discarded jobs: 404 not_found for an unknown id, 409 not_discarded for a job in another state (including one a concurrent retry has just re-queued: " +
			"the state is checked on the locked row in the retry's transaction, so of concurrent retries of one job exactly one succeeds). " +
			"409 conflict when the job is unique and a live job with its unique key exists.",
		Metadata: answers(codes(riverbank.ENOTFOUND, riverbank.ENOTDISCARDED, riverbank.ECONFLICT), nil)}, h.retryDeadLetter)
}

func (h *handlers) listDeadLetters(ctx context.Context, in *listDeadLettersInput) (*listDeadLettersOutput, error) {
	p := deadletter.ListParams{Kind: in.Kind, Limit: in.limit()}
	if in.Cursor != "" {
		c, err := decodeDeadLetterCursor(in.Cursor)
		if err != nil {
			return nil, err
		}
		p.After = c
	}
	jobs, err := h.DeadLetters.List(ctx, p)
	if err != nil {
		return nil, err
	}
	out := &listDeadLettersOutput{}
	out.Body.DeadLetters = make([]DeadLetterBody, len(jobs))
	for i, j := range jobs {
		out.Body.DeadLetters[i] = deadLetterBody(j)
	}
	if last := len(jobs) - 1; len(jobs) == p.Limit && jobs[last].DiscardedAt != nil {
		out.Body.NextCursor = encodeDeadLetterCursor(*jobs[last].DiscardedAt, jobs[last].ID)
	}
	return out, nil
}

func (h *handlers) getDeadLetter(ctx context.Context, in *deadLetterIDInput) (*deadLetterOutput, error) {
	j, err := h.DeadLetters.Get(ctx, in.JobID)
	if err != nil {
		return nil, err
	}
	return &deadLetterOutput{Body: deadLetterBody(j)}, nil
}

func (h *handlers) retryDeadLetter(ctx context.Context, in *deadLetterIDInput) (*deadLetterOutput, error) {
	j, err := h.DeadLetters.Retry(ctx, in.JobID)
	if err != nil {
		return nil, err
	}
	return &deadLetterOutput{Body: deadLetterBody(j)}, nil
}

// The dead-letter keyset is (discarded_at, id): "<unix microseconds>:<id>"
// inside the usual opaque cursor. Postgres keeps microseconds, so the
// position round-trips exactly.
func encodeDeadLetterCursor(at time.Time, id int64) string {
	return encodeCursor(strconv.FormatInt(at.UnixMicro(), 10) + ":" + strconv.FormatInt(id, 10))
}

func decodeDeadLetterCursor(c string) (*deadletter.Cursor, error) {
	s, err := decodeCursor(c)
	if err != nil {
		return nil, err
	}
	bad := riverbank.Errorf(riverbank.EINVALID, "cursor is not valid: pass next_cursor from a previous page unchanged")
	micros, idText, ok := strings.Cut(s, ":")
	if !ok {
		return nil, bad
	}
	us, err1 := strconv.ParseInt(micros, 10, 64)
	id, err2 := strconv.ParseInt(idText, 10, 64)
	if err1 != nil || err2 != nil || id <= 0 {
		return nil, bad
	}
	return &deadletter.Cursor{DiscardedAt: time.UnixMicro(us).UTC(), ID: id}, nil
}
