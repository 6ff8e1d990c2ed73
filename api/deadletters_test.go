package api_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2/humatest"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"riverbank/api"
	"riverbank/internal/testkit"
)

// deadLettersBundle is the API on a database of the test's own: dead
// letters must be committed and discarded by a running River client
// (testkit.WorkTestJobs), which a rolled-back transaction cannot see.
type deadLettersBundle struct {
	ctx context.Context
	kit *testkit.Bundle
	api humatest.TestAPI
}

func setupDeadLettersAPI(t *testing.T) *deadLettersBundle {
	t.Helper()
	kit := testkit.DB(t, testkit.DBOptions{MaxConns: 8})
	return &deadLettersBundle{ctx: kit.Ctx, kit: kit, api: kit.API(t)}
}

type deadLetterList struct {
	DeadLetters []api.DeadLetterBody `json:"dead_letters"`
	NextCursor  string               `json:"next_cursor"`
}

func (b *deadLettersBundle) list(t *testing.T, query string) deadLetterList {
	t.Helper()
	rec := b.api.Get("/v1/dead-letters" + query)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	return testkit.DecodeJSON[deadLetterList](t, rec)
}

func (b *deadLettersBundle) job(t *testing.T, id int64) *rivertype.JobRow {
	t.Helper()
	row, err := b.kit.Inserter.JobGet(b.ctx, id)
	require.NoError(t, err)
	return row
}

// discardedState is what a bad request must leave unchanged: every job's
// id, state and max_attempts.
func (b *deadLettersBundle) discardedState(t *testing.T) string {
	t.Helper()
	var s string
	require.NoError(t, b.kit.Pool.QueryRow(b.ctx, `SELECT coalesce(string_agg(id || ':' || state || ':' || max_attempts || ':' || scheduled_at, ',' ORDER BY id), '') FROM river_job`).Scan(&s))
	return s
}

func deadLetterIDs(ds []api.DeadLetterBody) []int64 {
	out := make([]int64, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}

func TestDeadLettersAPIListsNewestDiscardedFirstInPages(t *testing.T) {
	t.Parallel()
	b := setupDeadLettersAPI(t)
	rows := b.kit.WorkTestJobs(t, testkit.FailArgs{N: 1}, testkit.FailArgs{N: 2}, testkit.OKArgs{N: 3},
		testkit.FailOtherArgs{N: 4}, testkit.FailArgs{N: 5}, testkit.FailOtherArgs{N: 6})
	var discarded []*rivertype.JobRow
	for _, r := range rows {
		if r.State == rivertype.JobStateDiscarded {
			discarded = append(discarded, r)
		}
	}
	require.Len(t, discarded, 5)
	sort.Slice(discarded, func(i, j int) bool {
		if !discarded[i].FinalizedAt.Equal(*discarded[j].FinalizedAt) {
			return discarded[i].FinalizedAt.After(*discarded[j].FinalizedAt)
		}
		return discarded[i].ID > discarded[j].ID
	})
	want := make([]int64, len(discarded))
	for i, r := range discarded {
		want[i] = r.ID
	}

	var got []int64
	cursor := ""
	pages := 0
	for {
		pages++
		require.LessOrEqual(t, pages, 5, "pagination does not end")
		q := "?limit=2"
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		page := b.list(t, q)
		require.LessOrEqual(t, len(page.DeadLetters), 2)
		got = append(got, deadLetterIDs(page.DeadLetters)...)
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	require.Equal(t, want, got, "every dead letter once, newest discarded first")
	require.Equal(t, 3, pages)

	// The wire shape: args as the JSON object River stored, each attempt's
	// error, discarded_at.
	rec := b.api.Get("/v1/dead-letters?limit=1")
	require.Equal(t, http.StatusOK, rec.Code)
	body := rec.Body.String()
	for _, f := range []string{`"kind":"`, `"queue":"default"`, `"state":"discarded"`, `"args":{"n":`, `"attempt":1`, `"max_attempts":1`,
		`"errors":[{"attempt":1,"at":"`, `"error":"` + testkit.TestJobError + `"`, `"discarded_at":"`, `"created_at":"`, `"next_cursor":"`} {
		require.Contains(t, body, f)
	}
	first := testkit.DecodeJSON[deadLetterList](t, rec).DeadLetters[0]
	require.Equal(t, want[0], first.ID)
	require.True(t, discarded[0].FinalizedAt.Equal(*first.DiscardedAt))

	// GET one.
	rec = b.api.Get(fmt.Sprintf("/v1/dead-letters/%d", want[0]))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, first.ID, testkit.DecodeJSON[api.DeadLetterBody](t, rec).ID)
	prob := testkit.RequireProblem(t, b.api.Get(fmt.Sprintf("/v1/dead-letters/%d", rows[2].ID)), "not_found", http.StatusNotFound)
	require.Equal(t, "completed", prob.Details["state"])
	testkit.RequireProblem(t, b.api.Get("/v1/dead-letters/999999"), "not_found", http.StatusNotFound)
}

func TestDeadLettersAPIKindFilter(t *testing.T) {
	t.Parallel()
	b := setupDeadLettersAPI(t)
	rows := b.kit.WorkTestJobs(t, testkit.FailArgs{N: 1}, testkit.FailOtherArgs{N: 2}, testkit.FailArgs{N: 3})

	page := b.list(t, "?kind="+testkit.KindFailOther)
	require.Equal(t, []int64{rows[1].ID}, deadLetterIDs(page.DeadLetters))
	require.Empty(t, page.NextCursor)

	page = b.list(t, "?kind="+testkit.KindFail)
	require.ElementsMatch(t, []int64{rows[0].ID, rows[2].ID}, deadLetterIDs(page.DeadLetters))
	for _, d := range page.DeadLetters {
		require.Equal(t, testkit.KindFail, d.Kind)
	}

	require.Empty(t, b.list(t, "?kind=credit.restore").DeadLetters)
	require.Len(t, b.list(t, "?kind=").DeadLetters, 3, "an empty kind is no filter")
}

func TestDeadLettersAPIRejectsBadInput(t *testing.T) {
	t.Parallel()
	b := setupDeadLettersAPI(t)
	b.kit.WorkTestJobs(t, testkit.FailArgs{N: 1})
	before := b.discardedState(t)

	cursor := func(s string) string { return url.QueryEscape(base64.RawURLEncoding.EncodeToString([]byte(s))) }
	for name, query := range map[string]string{
		"KindUpperCase":     "?kind=Test.Fail",
		"KindDash":          "?kind=test-fail",
		"KindQuote":         "?kind=" + url.QueryEscape("x' OR '1'='1"),
		"KindTooLong":       "?kind=" + strings.Repeat("a", 65),
		"CursorNotBase64":   "?cursor=" + url.QueryEscape("!!!"),
		"CursorNoVersion":   "?cursor=" + cursor("1700000000000000:5"),
		"CursorNoID":        "?cursor=" + cursor("v1:1700000000000000"),
		"CursorTextID":      "?cursor=" + cursor("v1:1700000000000000:x"),
		"CursorZeroID":      "?cursor=" + cursor("v1:1700000000000000:0"),
		"CursorOtherFormat": "?cursor=" + cursor("v1:42"),
		"LimitZero":         "?limit=0",
		"LimitTooLarge":     "?limit=501",
		"LimitText":         "?limit=ten",
	} {
		rec := b.api.Get("/v1/dead-letters" + query)
		require.Equal(t, http.StatusUnprocessableEntity, rec.Code, "%s: %s", name, rec.Body.String())
		testkit.RequireProblem(t, rec, "validation_failed", http.StatusUnprocessableEntity)
	}
	for name, path := range map[string]string{
		"GetZero":    "/v1/dead-letters/0",
		"GetText":    "/v1/dead-letters/abc",
		"RetryZero":  "/v1/dead-letters/0/retry",
		"RetryText":  "/v1/dead-letters/abc/retry",
		"RetryMinus": "/v1/dead-letters/-1/retry",
	} {
		var rec *httptest.ResponseRecorder
		if strings.HasSuffix(path, "/retry") {
			rec = b.api.Post(path)
		} else {
			rec = b.api.Get(path)
		}
		require.Equal(t, http.StatusUnprocessableEntity, rec.Code, "%s: %s", name, rec.Body.String())
		testkit.RequireProblem(t, rec, "validation_failed", http.StatusUnprocessableEntity)
	}
	require.Equal(t, before, b.discardedState(t), "bad input writes nothing")
}

func TestDeadLettersAPIRetry(t *testing.T) {
	t.Parallel()
	b := setupDeadLettersAPI(t)
	rows := b.kit.WorkTestJobs(t, testkit.FailArgs{N: 1}, testkit.FailArgs{N: 2}, testkit.OKArgs{N: 3})
	dead, other, completed := rows[0], rows[1], rows[2]
	available, err := b.kit.Inserter.Insert(b.ctx, testkit.FailArgs{N: 4}, &river.InsertOpts{MaxAttempts: 1})
	require.NoError(t, err)
	scheduled, err := b.kit.Inserter.Insert(b.ctx, testkit.FailArgs{N: 5}, &river.InsertOpts{MaxAttempts: 1, ScheduledAt: time.Now().Add(time.Hour)})
	require.NoError(t, err)

	// Bad retries first: none of them changes any job.
	before := b.discardedState(t)
	testkit.RequireProblem(t, b.api.Post("/v1/dead-letters/999999/retry"), "not_found", http.StatusNotFound)
	for _, j := range []*rivertype.JobRow{completed, available.Job, scheduled.Job} {
		prob := testkit.RequireProblem(t, b.api.Post(fmt.Sprintf("/v1/dead-letters/%d/retry", j.ID)), "not_discarded", http.StatusConflict)
		require.Equal(t, string(j.State), prob.Details["state"])
	}
	require.Equal(t, before, b.discardedState(t), "a refused retry writes nothing")
	require.Equal(t, rivertype.JobStateCompleted, b.job(t, completed.ID).State)
	require.Equal(t, rivertype.JobStateScheduled, b.job(t, scheduled.Job.ID).State)

	rec := b.api.Post(fmt.Sprintf("/v1/dead-letters/%d/retry", dead.ID))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	got := testkit.DecodeJSON[api.DeadLetterBody](t, rec)
	require.Equal(t, dead.ID, got.ID)
	require.Equal(t, "available", got.State)
	require.Nil(t, got.DiscardedAt)
	require.NotContains(t, rec.Body.String(), "discarded_at")
	require.Equal(t, 2, got.MaxAttempts)
	require.Len(t, got.Errors, 1)
	row := b.job(t, dead.ID)
	require.Equal(t, rivertype.JobStateAvailable, row.State)
	require.Equal(t, 2, row.MaxAttempts)

	require.Equal(t, []int64{other.ID}, deadLetterIDs(b.list(t, "").DeadLetters), "the retried job leaves the list")
	prob := testkit.RequireProblem(t, b.api.Get(fmt.Sprintf("/v1/dead-letters/%d", dead.ID)), "not_found", http.StatusNotFound)
	require.Equal(t, "available", prob.Details["state"])
	testkit.RequireProblem(t, b.api.Post(fmt.Sprintf("/v1/dead-letters/%d/retry", dead.ID)), "not_discarded", http.StatusConflict)
	require.Equal(t, 2, b.job(t, dead.ID).MaxAttempts, "re-queued once")
}

// TestDeadLettersAPIConcurrentRetry: the retry checks the state on the
// locked row, so of two concurrent retries of one job exactly one is 200
// and the other 409 not_discarded (River's retry alone would answer both,
// the second as a no-op).
func TestDeadLettersAPIConcurrentRetry(t *testing.T) {
	t.Parallel()
	b := setupDeadLettersAPI(t)
	for range 3 {
		id := b.kit.WorkTestJobs(t, testkit.FailArgs{N: 1})[0].ID
		path := fmt.Sprintf("/v1/dead-letters/%d/retry", id)
		recs := make([]*httptest.ResponseRecorder, 2)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range recs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				recs[i] = b.api.Post(path)
			}()
		}
		close(start)
		wg.Wait()
		statuses := []int{recs[0].Code, recs[1].Code}
		sort.Ints(statuses)
		require.Equal(t, []int{http.StatusOK, http.StatusConflict}, statuses, "%s / %s", recs[0].Body.String(), recs[1].Body.String())
		for _, rec := range recs {
			if rec.Code == http.StatusConflict {
				testkit.RequireProblem(t, rec, "not_discarded", http.StatusConflict)
			}
		}
		require.Equal(t, 2, b.job(t, id).MaxAttempts, "re-queued once")
	}
}

func TestDeadLettersAPIDocumentsEveryStatus(t *testing.T) {
	t.Parallel()
	_, tapi := humatest.New(t)
	api.Register(tapi, &api.Services{Services: testkit.Tx(t).Services})
	paths := tapi.OpenAPI().Paths
	for _, tc := range []struct {
		path, method string
		statuses     []string
	}{
		{"/v1/dead-letters", http.MethodGet, []string{"200", "401", "413", "422", "500", "503"}},
		{"/v1/dead-letters/{job_id}", http.MethodGet, []string{"200", "401", "404", "413", "422", "500", "503"}},
		{"/v1/dead-letters/{job_id}/retry", http.MethodPost, []string{"200", "401", "404", "409", "413", "422", "500", "503"}},
	} {
		item := paths[tc.path]
		require.NotNil(t, item, tc.path)
		op := item.Get
		if tc.method == http.MethodPost {
			op = item.Post
		}
		require.NotNil(t, op, tc.path)
		var got []string
		for code := range op.Responses {
			got = append(got, code)
		}
		require.ElementsMatch(t, tc.statuses, got, "%s %s", tc.method, tc.path)
	}
}
