package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/events"
	"riverbank/internal/queue"
)

// Job kinds.
const (
	KindDeliver  = "webhook.deliver"
	KindDispatch = "webhook.dispatch"
	KindPrune    = "webhook.prune"
)

// Request headers of a delivery.
const (
	HeaderEventID   = "Riverbank-Event-Id"
	HeaderEventType = "Riverbank-Event-Type"
	HeaderSignature = "Riverbank-Signature"
)

// liveStates are the states in which a job will still run; River requires
// pending, scheduled, available and running in every unique state set.
var liveStates = []rivertype.JobState{
	rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRetryable,
	rivertype.JobStateRunning, rivertype.JobStateScheduled,
}

// DeliverArgs are the args of webhook.deliver: deliver a subscription's
// events from its cursor.
type DeliverArgs struct {
	SubscriptionID int64 `json:"subscription_id"`
}

// Kind implements river.JobArgs.
func (DeliverArgs) Kind() string { return KindDeliver }

// InsertOpts implements river.JobArgsWithInsertOpts: the webhook queue,
// and one live job per subscription (at most one delivery in flight). The
// service sets MaxAttempts from its options when it inserts.
func (DeliverArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:       queue.Webhook,
		MaxAttempts: DefaultMaxAttempts,
		UniqueOpts:  river.UniqueOpts{ByArgs: true, ByState: liveStates},
	}
}

// DispatchArgs are the args of the periodic webhook.dispatch.
type DispatchArgs struct{}

// Kind implements river.JobArgs.
func (DispatchArgs) Kind() string { return KindDispatch }

// InsertOpts implements river.JobArgsWithInsertOpts: on the webhook queue
// (the maintenance queue's two workers may be busy for minutes with a
// prune), never two live. Three attempts, a second apart (the worker's
// NextRetry): a dispatch cut off by a crash (kill -9) is rescued as
// retryable with one attempt spent; with a single attempt River's rescuer
// discarded it, leaving a discarded job behind every crash (seen in
// TestCrashKill9UnderLoad).
func (DispatchArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: queue.Webhook, MaxAttempts: 3, UniqueOpts: river.UniqueOpts{ByArgs: true, ByState: liveStates}}
}

// PruneArgs are the args of the periodic webhook.prune.
type PruneArgs struct{}

// Kind implements river.JobArgs.
func (PruneArgs) Kind() string { return KindPrune }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (PruneArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: queue.Maintenance, MaxAttempts: 3}
}

func (s *Service) deliverOpts() *river.InsertOpts {
	return &river.InsertOpts{MaxAttempts: s.maxAttempts}
}

// RetryDelay is the backoff before attempt+1 of a delivery: Backoff
// doubled per attempt, capped at MaxBackoff, plus up to 10 % jitter so
// receivers that fail together are not retried in lockstep.
func (s *Service) RetryDelay(attempt int) time.Duration {
	d := s.backoff
	for i := 1; i < attempt && d < s.maxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.maxBackoff)
	return d + time.Duration(rand.Int64N(int64(d)/10+1))
}

// Run is one run of a webhook.deliver job, as the worker hands it over.
type Run struct {
	SubscriptionID int64
	JobID          int64
	// Attempt and MaxAttempts are River's: the run whose Attempt reaches
	// MaxAttempts is the last before River discards the job.
	Attempt     int
	MaxAttempts int
	// Complete completes the job in tx (river.JobCompleteTx), so the
	// successor job can be inserted in the same transaction.
	Complete func(ctx context.Context, tx *db.Tx) error
}

// DeliveryError is a failed attempt: the job's error, so River retries.
// It names the event and the outcome, never the URL (its query may hold a
// receiver's token) or the secret.
type DeliveryError struct {
	SubscriptionID int64
	EventID        int64
	Status         int
	Message        string
}

func (e *DeliveryError) Error() string {
	return fmt.Sprintf("deliver event %d to subscription %d: %s", e.EventID, e.SubscriptionID, e.Message)
}

// eventBody is an event as GET /v1/events shows it (api.EventBody): the
// body of a delivery.
type eventBody struct {
	ID          int64           `json:"id"`
	Type        string          `json:"type"`
	SubjectType string          `json:"subject_type"`
	SubjectID   string          `json:"subject_id"`
	OccurredAt  time.Time       `json:"occurred_at"`
	Data        json.RawMessage `json:"data"`
}

// outcome is what one POST came to.
type outcome struct {
	ok     bool
	status *int32
	err    string
}

// Deliver works one run of a subscription's delivery job: from the
// cursor, POST each event the subscription wants, in feed order, one at a
// time; see the package comment. It returns a *DeliveryError when an
// attempt failed (River retries), nil when the subscription is caught up,
// gone, or handed over to a fresh job.
func (s *Service) Deliver(ctx context.Context, run Run) error {
	q := s.store.Queries()
	sub, err := q.GetWebhookSubscription(ctx, run.SubscriptionID)
	if db.IsNotFound(err) {
		return nil // deleted: nothing to deliver
	}
	if err != nil {
		return fmt.Errorf("load subscription %d: %w", run.SubscriptionID, err)
	}
	if sub.StalledJobID != nil {
		// A dead letter was retried (or another job runs): the dispatch may
		// wake the subscription again from now on.
		if _, err := q.ClearWebhookStall(ctx, sub.ID); err != nil {
			return fmt.Errorf("clear stall of subscription %d: %w", sub.ID, err)
		}
	}
	host := ""
	if u, err := url.Parse(sub.Url); err == nil {
		host = u.Host
	}
	log := s.logger.With("subscription_id", sub.ID, "host", host, "job_id", run.JobID)
	deadline := s.now().Add(s.budget)
	posTxid, posID := sub.CursorTxid, sub.CursorID
	secret := ""
	delivered := 0
	for {
		evs, err := q.WebhookEventsAfter(ctx, db.WebhookEventsAfterParams{AfterTxid: posTxid, AfterID: posID, Types: sub.EventTypes, StartSnapshot: sub.StartSnapshot, Lim: int32(min(s.batch-delivered, 50))})
		if err != nil {
			return fmt.Errorf("read events of subscription %d: %w", sub.ID, err)
		}
		if len(evs) == 0 {
			return nil // caught up; the dispatch wakes the subscription for new events
		}
		for _, ev := range evs {
			var out outcome
			if secret == "" {
				secret, err = s.keys.openSecret(sub.ID, sub.SecretKeyID, sub.SecretNonce, sub.SecretCiphertext)
				if err != nil {
					out = outcome{err: err.Error()}
				}
			}
			if out.err == "" {
				out = s.post(ctx, sub.Url, secret, ev)
			}
			if !out.ok {
				final := run.Attempt >= run.MaxAttempts
				recorded, err := s.recordFailure(ctx, sub.ID, posTxid, posID, ev, out, final, run.JobID)
				if err != nil {
					return err
				}
				if !recorded {
					return nil // deleted while we were sending
				}
				if final {
					log.WarnContext(ctx, "webhook delivery gave up: the job is discarded (a dead letter); the subscription waits at this event until it is retried",
						"event_id", ev.ID, "attempts", run.Attempt, "error", out.err)
				}
				de := &DeliveryError{SubscriptionID: sub.ID, EventID: ev.ID, Message: out.err}
				if out.status != nil {
					de.Status = int(*out.status)
				}
				return de
			}
			delivered++
			// A retried run hands over after its first success, so the next
			// event starts with a fresh attempt count; any run hands over
			// once its budget is spent.
			handOver := run.Attempt > 1 || delivered >= s.batch || !s.now().Before(deadline)
			moved := false
			// Recorded even when the job is being cancelled: the receiver has
			// the event, and the cursor must say so.
			rctx, cancel := recordContext(ctx)
			err := s.store.InTx(rctx, func(tx *db.Tx) error {
				ctx := rctx
				n, err := tx.AdvanceWebhookCursor(ctx, db.AdvanceWebhookCursorParams{ID: sub.ID, FromTxid: posTxid, FromID: posID, ToTxid: ev.Txid, ToID: ev.ID})
				if err != nil {
					return fmt.Errorf("advance cursor: %w", err)
				}
				if n == 0 {
					return nil // deleted meanwhile
				}
				moved = true
				if err := tx.RelaxWebhookCommit(ctx); err != nil {
					return fmt.Errorf("relax commit: %w", err)
				}
				if _, err := tx.RecordWebhookAttempt(ctx, db.RecordWebhookAttemptParams{SubscriptionID: sub.ID, EventID: ev.ID, EventType: ev.Type, LastStatus: out.status, Delivered: true}); err != nil {
					return fmt.Errorf("record delivery: %w", err)
				}
				if !handOver {
					return nil
				}
				return s.handOverTx(ctx, tx, sub.ID, run)
			})
			cancel()
			if err != nil {
				return fmt.Errorf("record delivery of event %d to subscription %d: %w", ev.ID, sub.ID, err)
			}
			if !moved || handOver {
				return nil
			}
			posTxid, posID = ev.Txid, ev.ID
		}
	}
}

// recordContext is the context of recording an attempt's outcome: not
// cancelled with the job (an outcome that happened is recorded), but
// bounded, so an unreachable database cannot hold the job forever.
func recordContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
}

// handOverTx completes the running job and, if the subscription has more
// to deliver, inserts its successor, in the caller's transaction: River's
// unique key is free once the running job is completed in it, and nothing
// depends on a step after commit.
func (s *Service) handOverTx(ctx context.Context, tx *db.Tx, subscriptionID int64, run Run) error {
	if run.Complete == nil {
		return errors.New("hand over: the run has no Complete")
	}
	if err := run.Complete(ctx, tx); err != nil {
		return fmt.Errorf("complete job: %w", err)
	}
	behind, err := tx.WebhookSubscriptionBehind(ctx, subscriptionID)
	if err != nil {
		return fmt.Errorf("check backlog: %w", err)
	}
	if !behind {
		return nil
	}
	_, err = tx.Insert(ctx, DeliverArgs{SubscriptionID: subscriptionID}, s.deliverOpts())
	return err
}

// recordFailure records a failed attempt on the delivery row, and on the
// last attempt the job River is about to discard on the subscription. It
// reports false when the subscription is gone (or its cursor moved).
func (s *Service) recordFailure(ctx context.Context, subscriptionID, posTxid, posID int64, ev db.Event, out outcome, final bool, jobID int64) (bool, error) {
	recorded := false
	msg := out.err
	ctx, cancel := recordContext(ctx)
	defer cancel()
	err := s.store.InTx(ctx, func(tx *db.Tx) error {
		_, err := tx.LockWebhookSubscriptionAt(ctx, db.LockWebhookSubscriptionAtParams{ID: subscriptionID, AtTxid: posTxid, AtID: posID})
		if db.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("lock subscription: %w", err)
		}
		recorded = true
		if _, err := tx.RecordWebhookAttempt(ctx, db.RecordWebhookAttemptParams{SubscriptionID: subscriptionID, EventID: ev.ID, EventType: ev.Type, LastStatus: out.status, LastError: &msg}); err != nil {
			return fmt.Errorf("record attempt: %w", err)
		}
		if final {
			return tx.StallWebhookSubscription(ctx, db.StallWebhookSubscriptionParams{ID: subscriptionID, JobID: &jobID})
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("record failed delivery of event %d to subscription %d: %w", ev.ID, subscriptionID, err)
	}
	return recorded, nil
}

// post sends one event. Only a 2xx within the timeout is a delivery.
func (s *Service) post(ctx context.Context, target, secret string, ev db.Event) outcome {
	data, err := events.Body(ev.DataKind, ev.Data)
	if err != nil {
		return outcome{err: "render event: " + err.Error()}
	}
	body, err := json.Marshal(eventBody{ID: ev.ID, Type: ev.Type, SubjectType: ev.SubjectType, SubjectID: ev.SubjectID, OccurredAt: ev.OccurredAt, Data: data})
	if err != nil {
		return outcome{err: "encode event: " + err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return outcome{err: "build request: the URL is not usable"}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "riverbank-webhooks/"+riverbank.Version)
	req.Header.Set(HeaderEventID, strconv.FormatInt(ev.ID, 10))
	req.Header.Set(HeaderEventType, ev.Type)
	req.Header.Set(HeaderSignature, SignatureHeader(secret, s.now().Unix(), body))
	resp, err := s.client.Do(req)
	if err != nil {
		return outcome{err: describeError(err, s.timeout)}
	}
	defer resp.Body.Close()
	snippet := drain(resp.Body)
	status := int32(resp.StatusCode)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return outcome{ok: true, status: &status}
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return outcome{status: &status, err: fmt.Sprintf("HTTP %d: redirects are not followed; point the subscription at the final URL", resp.StatusCode)}
	}
	msg := fmt.Sprintf("HTTP %d", resp.StatusCode)
	if snippet != "" {
		msg += ": " + snippet
	}
	return outcome{status: &status, err: msg}
}

// Dispatch enqueues the delivery job of every subscription that is not
// stalled and has an event it wants after its cursor (a live job makes
// the insert a no-op: River's unique key), after moving filtered
// subscriptions' cursors over events they do not want. It returns how
// many subscriptions were behind.
func (s *Service) Dispatch(ctx context.Context) (int, error) {
	q := s.store.Queries()
	if _, err := q.SkipUnwantedWebhookEvents(ctx); err != nil {
		return 0, fmt.Errorf("skip unwanted events: %w", err)
	}
	const page = 1000
	total := 0
	var after int64
	for {
		ids, err := q.WebhookSubscriptionsBehind(ctx, db.WebhookSubscriptionsBehindParams{AfterID: after, Lim: page})
		if err != nil {
			return total, fmt.Errorf("find subscriptions behind: %w", err)
		}
		if len(ids) == 0 {
			return total, nil
		}
		params := make([]river.InsertManyParams, len(ids))
		for i, id := range ids {
			params[i] = river.InsertManyParams{Args: DeliverArgs{SubscriptionID: id}, InsertOpts: s.deliverOpts()}
		}
		if err := s.store.InTx(ctx, func(tx *db.Tx) error {
			_, err := tx.InsertMany(ctx, params)
			return err
		}); err != nil {
			return total, fmt.Errorf("enqueue deliveries: %w", err)
		}
		total += len(ids)
		if len(ids) < page {
			return total, nil
		}
		after = ids[len(ids)-1]
	}
}

// pruneBatch is how many delivery rows one prune statement deletes.
const pruneBatch = 5000

// Prune drops delivered rows older than the retention in small batches
// (each its own short transaction) and returns how many it dropped.
func (s *Service) Prune(ctx context.Context) (int64, error) {
	cutoff := s.now().Add(-s.retention)
	var total int64
	for {
		n, err := s.store.Queries().DeleteOldWebhookDeliveries(ctx, db.DeleteOldWebhookDeliveriesParams{Cutoff: cutoff, Lim: pruneBatch})
		if err != nil {
			return total, fmt.Errorf("delete old deliveries: %w", err)
		}
		total += n
		if n < pruneBatch || ctx.Err() != nil {
			return total, ctx.Err()
		}
	}
}
