package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/events"
	"riverbank/internal/testdb"
	"riverbank/internal/testkit"
	"riverbank/internal/webhook"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// feedWait bounds waits for deliveries. The feed serves an event only once
// every older transaction of the cluster has ended (its xmin, shared by
// every database of the server), so on a server where other test runs hold
// transactions open a delivery can lag by that long; on a quiet server it
// takes milliseconds.
const feedWait = 90 * time.Second

// testBundle is a database of the test's own with the webhook service
// under test installed in the process's services, so the real River
// client (every worker and periodic job) and the API use it.
type testBundle struct {
	*testkit.Bundle
	svc    *webhook.Service
	client *river.Client[pgx.Tx]
}

// fastOptions are delivery options for tests: private targets allowed
// (receivers are on 127.0.0.1), millisecond backoff, a dispatch every
// 100 ms.
func fastOptions(k *testkit.Bundle) webhook.Options {
	return webhook.Options{
		Keys: k.Config.WebhookKeys, MaxAttempts: 12, AllowPrivate: true,
		Backoff: 5 * time.Millisecond, MaxBackoff: 40 * time.Millisecond,
		Timeout: 3 * time.Second, DispatchInterval: 100 * time.Millisecond,
	}
}

// setup builds the bundle; change adjusts the options; the River client is
// built (not started) on the service.
func setup(t *testing.T, change func(o *webhook.Options)) *testBundle {
	t.Helper()
	k := testkit.DB(t, testkit.DBOptions{MaxConns: 12})
	opts := fastOptions(k)
	if change != nil {
		change(&opts)
	}
	svc := webhook.NewService(k.Store, opts)
	k.Services.Webhooks = svc
	return &testBundle{Bundle: k, svc: svc, client: k.Client(t, nil)}
}

// appendEvents appends n events in one transaction, pausing before the
// commit, and returns their ids.
func (b *testBundle) appendEvents(t *testing.T, typ string, n int, pause time.Duration) []int64 {
	t.Helper()
	var ids []int64
	err := b.Store.InTx(b.Ctx, func(tx *db.Tx) error {
		for i := 0; i < n; i++ {
			if err := events.AppendTx(b.Ctx, tx, typ, "order", b.ID("o"+strconv.Itoa(i)), map[string]any{"n": i, "note": "test"}); err != nil {
				return err
			}
		}
		rows, err := tx.Tx.Query(b.Ctx, `SELECT id FROM event WHERE txid = pg_current_xact_id()::text::bigint ORDER BY id`)
		if err != nil {
			return err
		}
		if ids, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
			return err
		}
		time.Sleep(pause)
		return nil
	})
	require.NoError(t, err)
	require.Len(t, ids, n)
	return ids
}

// feedOrder is every event id in the order the feed serves them.
func (b *testBundle) feedOrder(t *testing.T) []int64 {
	t.Helper()
	rows, err := b.Pool.Query(b.Ctx, `SELECT id FROM event ORDER BY txid, id`)
	require.NoError(t, err)
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	return ids
}

func (b *testBundle) deliverJobs(t *testing.T, states ...rivertype.JobState) []*rivertype.JobRow {
	t.Helper()
	p := river.NewJobListParams().Kinds(webhook.KindDeliver).First(100)
	if len(states) > 0 {
		p = p.States(states...)
	}
	res, err := b.Inserter.JobList(b.Ctx, p)
	require.NoError(t, err)
	return res.Jobs
}

// receiver is an httptest server on 127.0.0.1 that checks every request
// (signature, headers, one in flight) and answers with status(n, id), n
// counting requests from 1.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	status func(n int, eventID int64) int
	block  chan struct{} // when set, a request waits on it before answering

	mu       sync.Mutex
	secret   string
	requests []int64          // event id of every request, in arrival order
	acked    []int64          // event ids answered 2xx, in order
	bodies   map[int64][]byte // body of each event's last request
	problems []string         // what was wrong with requests

	inFlight, maxInFlight atomic.Int32
}

func newReceiver(t *testing.T, status func(n int, eventID int64) int) *receiver {
	t.Helper()
	return newBlockingReceiver(t, status, nil)
}

// newBlockingReceiver is a receiver whose requests wait for block to be
// closed before answering.
func newBlockingReceiver(t *testing.T, status func(n int, eventID int64) int, block chan struct{}) *receiver {
	t.Helper()
	r := &receiver{t: t, status: status, block: block, bodies: map[int64][]byte{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setSecret(s string) {
	r.mu.Lock()
	r.secret = s
	r.mu.Unlock()
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	n := r.inFlight.Add(1)
	defer r.inFlight.Add(-1)
	for {
		m := r.maxInFlight.Load()
		if n <= m || r.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	body, _ := io.ReadAll(req.Body)
	if r.block != nil {
		<-r.block
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var ev struct {
		ID   int64  `json:"id"`
		Type string `json:"type"`
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		r.problems = append(r.problems, "body is not JSON: "+err.Error())
	}
	if got := req.Header.Get(webhook.HeaderEventID); got != strconv.FormatInt(ev.ID, 10) {
		r.problems = append(r.problems, fmt.Sprintf("Riverbank-Event-Id %q, body id %d", got, ev.ID))
	}
	if req.Method != http.MethodPost || req.Header.Get("Content-Type") != "application/json" {
		r.problems = append(r.problems, "not a JSON POST: "+req.Method+" "+req.Header.Get("Content-Type"))
	}
	if err := webhook.Verify(r.secret, req.Header.Get(webhook.HeaderSignature), body, 5*time.Minute, time.Now()); err != nil {
		r.problems = append(r.problems, fmt.Sprintf("event %d: signature: %v", ev.ID, err))
	}
	r.requests = append(r.requests, ev.ID)
	r.bodies[ev.ID] = body
	code := http.StatusNoContent
	if r.status != nil {
		code = r.status(len(r.requests), ev.ID)
	}
	if code >= 200 && code < 300 {
		r.acked = append(r.acked, ev.ID)
	}
	w.WriteHeader(code)
	_, _ = w.Write([]byte("receiver says " + strconv.Itoa(code)))
}

func (r *receiver) snapshot() (requests, acked []int64, problems []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.requests), slices.Clone(r.acked), slices.Clone(r.problems)
}

// subscribe creates a subscription to the receiver and gives it the
// secret.
func (b *testBundle) subscribe(t *testing.T, r *receiver, types ...string) *webhook.Subscription {
	t.Helper()
	sub, secret, err := b.svc.Create(b.Ctx, webhook.CreateInput{URL: r.srv.URL + "/hooks?token=abc", EventTypes: types, Description: "test"})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(secret, webhook.SecretPrefix))
	r.setSecret(secret)
	return sub
}

// waitDelivered waits until n of a subscription's deliveries are recorded
// as delivered (a receiver sees an event just before riverbank commits
// that it was delivered).
func (b *testBundle) waitDelivered(t *testing.T, subID int64, n int) {
	t.Helper()
	testkit.WaitFor(t, feedWait, "deliveries recorded", func() bool {
		return b.Count(t, `SELECT count(*) FROM webhook_delivery WHERE subscription_id = $1 AND delivered_at IS NOT NULL`, subID) == int64(n)
	})
}

func (b *testBundle) deliveries(t *testing.T, subID int64) []*webhook.Delivery {
	t.Helper()
	ds, err := b.svc.Deliveries(b.Ctx, subID, 0, webhook.MaxLimit)
	require.NoError(t, err)
	return ds
}

// TestDeliversInFeedOrderThroughFailures: events written by concurrent
// transactions that commit out of id order, and a receiver that fails the
// first attempts and then every ninth request: every event is delivered,
// once, in feed order; no request is ever for an event after one not yet
// acknowledged; one request at a time; every signature verifies.
func TestDeliversInFeedOrderThroughFailures(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *webhook.Options) { o.Batch = 7 })
	r := newReceiver(t, func(n int, _ int64) int {
		if n <= 2 || n%9 == 0 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	sub := b.subscribe(t, r)
	testkit.Start(t, b.client)

	var wg sync.WaitGroup
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 6; i++ {
				b.appendEvents(t, events.OrderCreated, 1+rand.IntN(3), time.Duration(rand.IntN(30))*time.Millisecond)
			}
		}()
	}
	wg.Wait()
	want := b.feedOrder(t)
	require.GreaterOrEqual(t, len(want), 36)

	testkit.WaitFor(t, feedWait, "every event acknowledged", func() bool {
		_, acked, _ := r.snapshot()
		return len(acked) >= len(want)
	})
	requests, acked, problems := r.snapshot()
	require.Empty(t, problems)
	require.Equal(t, want, acked, "every event once, in feed order")
	require.EqualValues(t, 1, r.maxInFlight.Load(), "one delivery in flight per subscription")
	pos := map[int64]int{}
	for i, id := range want {
		pos[id] = i
	}
	for i := 1; i < len(requests); i++ {
		require.GreaterOrEqual(t, pos[requests[i]], pos[requests[i-1]], "request %d (event %d) went out before event %d was acknowledged", i, requests[i], requests[i-1])
	}
	require.Greater(t, len(requests), len(want), "some attempts failed")

	// The delivery rows say the same: one per event, attempts as sent.
	b.waitDelivered(t, sub.ID, len(want))
	sent := map[int64]int{}
	for _, id := range requests {
		sent[id]++
	}
	ds := b.deliveries(t, sub.ID)
	require.Len(t, ds, len(want))
	for i, d := range ds {
		require.Equal(t, want[len(want)-1-i], d.EventID, "newest first, in feed order")
		require.Equal(t, sent[d.EventID], d.Attempts)
		require.NotNil(t, d.DeliveredAt)
		require.Nil(t, d.LastError)
		require.Equal(t, 200, *d.LastStatus)
	}
}

// TestDeliveryBodyIsTheEventAsTheAPIShowsIt: the POSTed body is the event
// exactly as GET /v1/events returns it.
func TestDeliveryBodyIsTheEventAsTheAPIShowsIt(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	r := newReceiver(t, nil)
	b.subscribe(t, r)
	testkit.Start(t, b.client)
	ids := b.appendEvents(t, events.LoanRepaid, 1, 0)
	testkit.WaitFor(t, feedWait, "delivery", func() bool {
		_, acked, _ := r.snapshot()
		return len(acked) == 1
	})
	rec := b.API(t).Get("/v1/events")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var page struct {
		Events []json.RawMessage `json:"events"`
	}
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &page))
	require.Len(t, page.Events, 1)
	r.mu.Lock()
	got := r.bodies[ids[0]]
	r.mu.Unlock()
	require.JSONEq(t, string(page.Events[0]), string(got))
}

// TestSubscriptionStartsAtTheFeedEndAndFiltersTypes: events before the
// subscription are not delivered; only the wanted types are; the dispatch
// moves the cursor over unwanted events.
func TestSubscriptionStartsAtTheFeedEndAndFiltersTypes(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	before := b.appendEvents(t, events.OrderPaid, 2, 0)
	r := newReceiver(t, nil)
	sub := b.subscribe(t, r, events.OrderPaid, events.LoanRepaid, events.OrderPaid)
	require.Equal(t, []string{events.LoanRepaid, events.OrderPaid}, sub.EventTypes, "sorted, without duplicates")
	testkit.Start(t, b.client)

	b.appendEvents(t, events.OrderCreated, 3, 0)
	paid := b.appendEvents(t, events.OrderPaid, 2, 0)
	b.appendEvents(t, events.CaseOpened, 2, 0)
	repaid := b.appendEvents(t, events.LoanRepaid, 1, 0)
	unwanted := b.appendEvents(t, events.CaseClosed, 3, 0)
	testkit.WaitFor(t, feedWait, "wanted events delivered", func() bool {
		_, acked, _ := r.snapshot()
		return len(acked) == 3
	})
	_, acked, problems := r.snapshot()
	require.Empty(t, problems)
	require.Equal(t, append(paid, repaid...), acked)
	for _, id := range before {
		require.NotContains(t, acked, id, "events before the subscription are not delivered")
	}
	// The cursor moves past the trailing unwanted events (no job needed).
	last := unwanted[len(unwanted)-1]
	testkit.WaitFor(t, feedWait, "cursor past unwanted events", func() bool {
		return b.Count(t, `SELECT count(*) FROM webhook_subscription s, event e WHERE s.id = $1 AND e.id = $2 AND (s.cursor_txid, s.cursor_id) > (e.txid, e.id)`, sub.ID, last) == 1
	})
}

// TestDeadReceiverBecomesADeadLetterAndRetryResumes: a receiver that
// always fails exhausts the attempts; River discards the job (a dead
// letter), the subscription waits (the dispatch enqueues nothing), and a
// retry of the dead letter through the API resumes at the same event and
// delivers everything in order.
func TestDeadReceiverBecomesADeadLetterAndRetryResumes(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *webhook.Options) { o.MaxAttempts = 3 })
	var up atomic.Bool
	r := newReceiver(t, func(int, int64) int {
		if up.Load() {
			return http.StatusAccepted
		}
		return http.StatusInternalServerError
	})
	sub := b.subscribe(t, r)
	testkit.Start(t, b.client)
	ids := b.appendEvents(t, events.OrderCreated, 3, 0)

	var dead *rivertype.JobRow
	testkit.WaitFor(t, feedWait, "the delivery job discarded", func() bool {
		jobs := b.deliverJobs(t, rivertype.JobStateDiscarded)
		if len(jobs) == 1 {
			dead = jobs[0]
		}
		return dead != nil
	})
	require.Equal(t, 3, dead.Attempt)
	requests, _, problems := r.snapshot()
	require.Empty(t, problems)
	require.Equal(t, []int64{ids[0], ids[0], ids[0]}, requests, "only the first event, max attempts times")
	require.Len(t, dead.Errors, 3)
	require.Contains(t, dead.Errors[2].Error, "HTTP 500")
	require.NotContains(t, dead.Errors[2].Error, "token=abc", "the URL (and its query) is not in job errors")

	got, err := b.svc.Get(b.Ctx, sub.ID)
	require.NoError(t, err)
	require.NotNil(t, got.StalledJobID)
	require.Equal(t, dead.ID, *got.StalledJobID)
	ds := b.deliveries(t, sub.ID)
	require.Len(t, ds, 1)
	require.Equal(t, ids[0], ds[0].EventID)
	require.Equal(t, 3, ds[0].Attempts)
	require.Equal(t, 500, *ds[0].LastStatus)
	require.Contains(t, *ds[0].LastError, "HTTP 500: receiver says 500")
	require.Nil(t, ds[0].DeliveredAt)

	// Stalled: several dispatches later, no new job and no request.
	time.Sleep(500 * time.Millisecond)
	require.Empty(t, b.deliverJobs(t, rivertype.JobStateAvailable, rivertype.JobStateRunning, rivertype.JobStateRetryable, rivertype.JobStateScheduled))
	requests, _, _ = r.snapshot()
	require.Len(t, requests, 3)

	// The dead letter is listed and retried through the API.
	api := b.API(t)
	rec := api.Get("/v1/dead-letters?kind=" + webhook.KindDeliver)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Contains(t, rec.Body.String(), fmt.Sprintf(`"id":%d`, dead.ID))
	up.Store(true)
	rec = api.Post(fmt.Sprintf("/v1/dead-letters/%d/retry", dead.ID))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())

	testkit.WaitFor(t, feedWait, "every event delivered after the retry", func() bool {
		_, acked, _ := r.snapshot()
		return len(acked) == 3
	})
	requests, acked, problems := r.snapshot()
	require.Empty(t, problems)
	require.Equal(t, ids, acked, "resumed at the same event, in order")
	require.Equal(t, append([]int64{ids[0], ids[0], ids[0]}, ids...), requests)
	b.waitDelivered(t, sub.ID, 3)
	got, err = b.svc.Get(b.Ctx, sub.ID)
	require.NoError(t, err)
	require.Nil(t, got.StalledJobID)
	ds = b.deliveries(t, sub.ID)
	require.Len(t, ds, 3)
	require.Equal(t, ids[0], ds[2].EventID)
	require.Equal(t, 4, ds[2].Attempts)
	require.NotNil(t, ds[2].DeliveredAt)
	require.Nil(t, ds[2].LastError)

	// New events flow again through the dispatch.
	more := b.appendEvents(t, events.OrderPaid, 2, 0)
	testkit.WaitFor(t, feedWait, "new events after recovery", func() bool {
		_, acked, _ := r.snapshot()
		return len(acked) == 5
	})
	_, acked, _ = r.snapshot()
	require.Equal(t, append(ids, more...), acked)
}

// TestLoopbackRefusedAtDeliveryTime: a subscription created while
// private targets were allowed, to a host name that resolves to 127.0.0.1
// (localhost), is refused on the socket at delivery by a process that
// does not allow them: the receiver gets nothing, the attempt records
// why, and the job ends a dead letter.
func TestLoopbackRefusedAtDeliveryTime(t *testing.T) {
	t.Parallel()
	b := setup(t, func(o *webhook.Options) { o.AllowPrivate = false; o.MaxAttempts = 2 })
	r := newReceiver(t, nil)
	permissive := webhook.NewService(b.Store, fastOptions(b.Bundle))
	port := r.srv.URL[strings.LastIndex(r.srv.URL, ":")+1:]
	sub, _, err := permissive.Create(b.Ctx, webhook.CreateInput{URL: "http://localhost:" + port + "/hooks"})
	require.NoError(t, err)
	testkit.Start(t, b.client)
	b.appendEvents(t, events.OrderCreated, 1, 0)

	testkit.WaitFor(t, feedWait, "the delivery job discarded", func() bool {
		return len(b.deliverJobs(t, rivertype.JobStateDiscarded)) == 1
	})
	requests, _, _ := r.snapshot()
	require.Empty(t, requests, "nothing reached the loopback receiver")
	ds := b.deliveries(t, sub.ID)
	require.Len(t, ds, 1)
	require.Nil(t, ds[0].LastStatus)
	require.Contains(t, *ds[0].LastError, "target forbidden")
	require.Contains(t, *ds[0].LastError, "loopback")
	require.Equal(t, 2, ds[0].Attempts)
}

// TestDeleteStopsDeliveries: a delivery in flight when the subscription
// is deleted completes; nothing is sent after, and the job ends cleanly.
func TestDeleteStopsDeliveries(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	block := make(chan struct{})
	r := newBlockingReceiver(t, nil, block)
	sub := b.subscribe(t, r)
	testkit.Start(t, b.client)
	b.appendEvents(t, events.OrderCreated, 3, 0)
	testkit.WaitFor(t, feedWait, "first delivery in flight", func() bool { return r.inFlight.Load() == 1 })

	rec := b.API(t).Delete(fmt.Sprintf("/v1/webhook-subscriptions/%d", sub.ID))
	require.Equal(t, http.StatusNoContent, rec.Code, rec.Body.String())
	close(block)
	b.appendEvents(t, events.OrderCreated, 2, 0)
	testkit.WaitFor(t, feedWait, "delivery jobs finished", func() bool {
		return len(b.deliverJobs(t, rivertype.JobStateAvailable, rivertype.JobStateRunning, rivertype.JobStateRetryable, rivertype.JobStateScheduled)) == 0
	})
	time.Sleep(300 * time.Millisecond) // a few dispatch intervals
	requests, _, _ := r.snapshot()
	require.Len(t, requests, 1, "only the delivery in flight at the delete")
	require.Empty(t, b.deliverJobs(t, rivertype.JobStateDiscarded, rivertype.JobStateRetryable), "the job stopped without an error")
	require.Zero(t, b.Count(t, `SELECT count(*) FROM webhook_delivery`))
	_, err := b.svc.Get(b.Ctx, sub.ID)
	testkit.RequireCode(t, err, riverbank.ENOTFOUND)
}

// TestSecretIsNotStoredInClear: the secret appears in no column of the
// subscription's row, the API never shows it after the create, and the
// row's ciphertext opens only for its own subscription.
func TestSecretIsNotStoredInClear(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	api := b.API(t)
	rec := api.Post("/v1/webhook-subscriptions", map[string]any{"url": "https://hooks.example.com/a", "event_types": []string{events.BatchCompleted}})
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	created := testkit.DecodeJSON[struct {
		ID     int64  `json:"id"`
		Secret string `json:"secret"`
	}](t, rec)
	secret := created.Secret
	require.True(t, strings.HasPrefix(secret, webhook.SecretPrefix))
	raw := strings.TrimPrefix(secret, webhook.SecretPrefix)

	var row string
	require.NoError(t, b.Pool.QueryRow(b.Ctx, `SELECT row_to_json(s)::text || encode(s.secret_ciphertext, 'escape') || encode(s.secret_ciphertext, 'base64') FROM webhook_subscription s WHERE id = $1`, created.ID).Scan(&row))
	require.NotContains(t, row, raw)
	require.NotContains(t, row, secret)

	for _, path := range []string{fmt.Sprintf("/v1/webhook-subscriptions/%d", created.ID), "/v1/webhook-subscriptions"} {
		rec := api.Get(path)
		require.Equal(t, http.StatusOK, rec.Code)
		require.NotContains(t, rec.Body.String(), raw)
		require.NotContains(t, rec.Body.String(), `"secret"`)
	}

	// A ciphertext moved onto another subscription does not open: its
	// delivery fails naming the key, never the secret.
	r := newReceiver(t, nil)
	other := b.subscribe(t, r)
	_, err := b.Pool.Exec(b.Ctx, `UPDATE webhook_subscription o SET secret_nonce = s.secret_nonce, secret_ciphertext = s.secret_ciphertext FROM webhook_subscription s WHERE o.id = $1 AND s.id = $2`, other.ID, created.ID)
	require.NoError(t, err)
	b.appendEvents(t, events.OrderCreated, 1, 0)
	_, err = b.svc.Dispatch(b.Ctx)
	require.NoError(t, err)
	testkit.Start(t, b.client)
	testkit.WaitFor(t, feedWait, "a failed attempt", func() bool {
		ds := b.deliveries(t, other.ID)
		return len(ds) == 1
	})
	ds := b.deliveries(t, other.ID)
	require.Contains(t, *ds[0].LastError, "cannot decrypt")
	require.NotContains(t, *ds[0].LastError, raw)
	requests, _, _ := r.snapshot()
	require.Empty(t, requests)
}

// TestCreateRefusesInternalTargets: without the flag, an IP literal or a
// name resolving to a loopback, private, link-local, CGNAT, multicast or
// unspecified address is 422 webhook_target_forbidden and writes nothing;
// public targets pass.
func TestCreateRefusesInternalTargets(t *testing.T) {
	t.Parallel()
	k := testkit.Tx(t)
	resolver := fakeResolver{
		"public.example":   {"93.184.216.34"},
		"mixed.example":    {"93.184.216.34", "10.1.2.3"},
		"rebind.example":   {"::ffff:169.254.169.254"},
		"private6.example": {"fd00::1"},
	}
	svc := webhook.NewService(k.Store, webhook.Options{Keys: k.Config.WebhookKeys, Resolver: resolver})
	for _, u := range []string{
		"http://127.0.0.1/", "http://127.1.2.3:8080/x", "http://localhost:9/", "http://[::1]/", "http://10.0.0.1/",
		"http://172.16.5.4/", "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data", "http://100.64.0.1/",
		"http://[fe80::1]/", "http://[fc00::1]/", "http://0.0.0.0/", "http://224.0.0.1/", "http://[::ffff:127.0.0.1]/",
		"http://[64:ff9b::a00:1]/", "http://[2002:c0a8:101::1]/", "https://mixed.example/", "https://rebind.example/", "https://private6.example/",
	} {
		_, _, err := svc.Create(k.Ctx, webhook.CreateInput{URL: u})
		de := testkit.RequireCode(t, err, riverbank.EWEBHOOKTARGETFORBIDDEN)
		require.Equal(t, "url", de.Details["field"], u)
		require.Contains(t, de.Message, "RIVERBANK_WEBHOOK_ALLOW_PRIVATE", u)
	}
	require.Zero(t, k.Count(t, `SELECT count(*) FROM webhook_subscription`))
	for _, u := range []string{"https://public.example/hook", "http://93.184.216.34:8443/x"} {
		_, _, err := svc.Create(k.Ctx, webhook.CreateInput{URL: u})
		require.NoError(t, err, u)
	}
	_, _, err := svc.Create(k.Ctx, webhook.CreateInput{URL: "https://nowhere.example/"})
	de := testkit.RequireCode(t, err, riverbank.EINVALID)
	require.Contains(t, de.Message, "does not resolve")
}

type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	ips, ok := f[host]
	if !ok {
		if host == "localhost" {
			return []netip.Addr{netip.MustParseAddr("127.0.0.1")}, nil
		}
		return nil, fmt.Errorf("no such host %s", host)
	}
	out := make([]netip.Addr, len(ips))
	for i, s := range ips {
		out[i] = netip.MustParseAddr(s)
	}
	return out, nil
}

// TestForbidden is the address rule.
func TestForbidden(t *testing.T) {
	t.Parallel()
	tests := []struct {
		ip     string
		reason string // fragment; "" when allowed
	}{
		{"127.0.0.1", "loopback"}, {"::1", "loopback"}, {"10.1.1.1", "private"}, {"172.31.255.255", "private"},
		{"192.168.0.1", "private"}, {"fd12::1", "private"}, {"169.254.169.254", "link-local"}, {"fe80::1", "link-local"},
		{"0.0.0.0", "unspecified"}, {"::", "unspecified"}, {"239.1.2.3", "multicast"}, {"224.0.0.251", "link-local"}, {"ff02::1", "link-local"}, {"ff0e::1", "multicast"},
		{"100.64.0.1", "carrier-grade"}, {"100.127.255.255", "carrier-grade"}, {"0.1.2.3", "this network"},
		{"255.255.255.255", "broadcast"}, {"198.18.0.1", "benchmarking"}, {"::ffff:10.0.0.1", "private"},
		{"64:ff9b::7f00:1", "loopback"}, {"2002:a00:1::1", "private"}, {"2001:db8::1", "documentation"},
		{"93.184.216.34", ""}, {"100.128.0.1", ""}, {"172.32.0.1", ""}, {"2606:4700::1111", ""}, {"64:ff9b::808:808", ""},
	}
	for _, tt := range tests {
		got := webhook.Forbidden(netip.MustParseAddr(tt.ip))
		if tt.reason == "" {
			require.Empty(t, got, tt.ip)
		} else {
			require.Contains(t, got, tt.reason, tt.ip)
		}
	}
}

// TestParseURL is the URL rule.
func TestParseURL(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"https://example.com", "http://example.com:8080/a/b?c=d", "HTTPS://Example.com/x"} {
		_, err := webhook.ParseURL(ok)
		require.NoError(t, err, ok)
	}
	for _, bad := range []string{"", "ftp://example.com/", "example.com/hook", "https://user:pw@example.com/", "https://user@example.com/",
		"https://example.com/#frag", "https:///path", "https://example.com:99999/", "https://exa mple.com/", "mailto:a@example.com",
		"https://example.com/" + strings.Repeat("a", webhook.MaxURLLength), "https://example.com/\x00"} {
		_, err := webhook.ParseURL(bad)
		testkit.RequireCode(t, err, riverbank.EINVALID)
	}
}

// TestSignature: the header verifies with the secret, and fails for
// another body, another secret or a stale timestamp.
func TestSignature(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_750_000_000, 0)
	body := []byte(`{"id":1}`)
	h := webhook.SignatureHeader("whsec_x", now.Unix(), body)
	require.Regexp(t, `^t=1750000000,v1=[0-9a-f]{64}$`, h)
	require.NoError(t, webhook.Verify("whsec_x", h, body, time.Minute, now))
	require.Error(t, webhook.Verify("whsec_x", h, []byte(`{"id":2}`), time.Minute, now))
	require.Error(t, webhook.Verify("whsec_y", h, body, time.Minute, now))
	require.Error(t, webhook.Verify("whsec_x", h, body, time.Minute, now.Add(2*time.Minute)))
	require.Error(t, webhook.Verify("whsec_x", "v1=abc", body, time.Minute, now))
}

// TestRetryDelayDoublesUpToTheCap: the backoff.
func TestRetryDelayDoublesUpToTheCap(t *testing.T) {
	t.Parallel()
	svc := webhook.NewService(nil, webhook.Options{Backoff: time.Second, MaxBackoff: 10 * time.Second})
	for attempt, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 30: 10 * time.Second} {
		d := svc.RetryDelay(attempt)
		require.GreaterOrEqual(t, d, want, "attempt %d", attempt)
		require.LessOrEqual(t, d, want+want/10, "attempt %d", attempt)
	}
}
