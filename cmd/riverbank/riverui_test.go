package main

// The River UI end to end: the real server, its real River UI, real
// Postgres, and for the login flow a real headless Chromium driven over
// the DevTools protocol (chromedp).

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// discardedJob inserts a job of a kind no worker handles, with one
// attempt, and waits until River has worked it and discarded it: the dead
// letter an operator retries in the UI.
func discardedJob(t *testing.T, pool *pgxpool.Pool) *rivertype.JobRow {
	t.Helper()
	ctx := context.Background()
	client := insertClient(t, pool)
	res, err := client.Insert(ctx, unregisteredArgs{N: 1}, &river.InsertOpts{MaxAttempts: 1})
	require.NoError(t, err)
	var job *rivertype.JobRow
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		job, err = client.JobGet(ctx, res.Job.ID)
		require.NoError(c, err)
		require.Equal(c, rivertype.JobStateDiscarded, job.State)
	}, 60*time.Second, 50*time.Millisecond)
	require.Equal(t, 1, job.Attempt)
	require.Equal(t, 1, job.MaxAttempts)
	return job
}

// requireUntouched checks that nothing retried, cancelled or deleted job.
func requireUntouched(t *testing.T, pool *pgxpool.Pool, job *rivertype.JobRow) {
	t.Helper()
	now, err := insertClient(t, pool).JobGet(context.Background(), job.ID)
	require.NoError(t, err, "the job still exists")
	require.Equal(t, rivertype.JobStateDiscarded, now.State)
	require.Equal(t, job.Attempt, now.Attempt)
	require.Equal(t, job.MaxAttempts, now.MaxAttempts)
	require.Equal(t, job.FinalizedAt, now.FinalizedAt)
	require.Equal(t, job.ScheduledAt, now.ScheduledAt)
}

// requireRetried waits until River has worked job again after a retry
// (River's retry gives an exhausted job one more attempt).
func requireRetried(t *testing.T, pool *pgxpool.Pool, job *rivertype.JobRow) {
	t.Helper()
	client := insertClient(t, pool)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		now, err := client.JobGet(context.Background(), job.ID)
		require.NoError(c, err)
		require.Equal(c, job.MaxAttempts+1, now.MaxAttempts, "retried")
		require.Equal(c, job.Attempt+1, now.Attempt, "worked again")
	}, 60*time.Second, 50*time.Millisecond)
}

// A hostile page cannot make a browser that holds basic credentials (or a
// session) change jobs: the cross-origin state change is refused before
// the UI sees it, and the job is untouched. The same request from the
// server's own origin works, so the refusal is the origin's doing.
func TestRiverUIRefusesCrossOriginJobChanges(t *testing.T) {
	t.Parallel()
	b := setup(t)
	job := discardedJob(t, b.pool)
	body := fmt.Sprintf(`{"ids":["%d"]}`, job.ID)

	for _, action := range []string{"retry", "cancel", "delete"} {
		for name, headers := range map[string]map[string]string{
			"foreign Origin":   {"Origin": "https://evil.example"},
			"cross-site fetch": {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
			"same-site fetch":  {"Sec-Fetch-Site": "same-site", "Origin": "http://other.localhost"},
		} {
			resp, respBody := b.do(t, http.MethodPost, "/riverui/api/jobs/"+action, strings.NewReader(body),
				withBasic("operator", testToken), func(r *http.Request) {
					r.Header.Set("Content-Type", "text/plain;charset=UTF-8")
					for k, v := range headers {
						r.Header.Set(k, v)
					}
				})
			p := requireProblem(t, resp, respBody, http.StatusForbidden, "cross_origin_refused")
			require.Contains(t, p.Detail, "cross-origin", "%s %s", action, name)
		}
		// Without any browser header, text/plain is not accepted either.
		resp, respBody := b.do(t, http.MethodPost, "/riverui/api/jobs/"+action, strings.NewReader(body),
			withBasic("operator", testToken), func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") })
		requireProblem(t, resp, respBody, http.StatusUnsupportedMediaType, "unsupported_media_type")
	}
	requireUntouched(t, b.pool, job)

	// The same text/plain request from the UI's own origin (as the UI
	// sends it) retries the job.
	resp, respBody := b.do(t, http.MethodPost, "/riverui/api/jobs/retry", strings.NewReader(body),
		withBasic("operator", testToken), func(r *http.Request) {
			r.Header.Set("Content-Type", "text/plain;charset=UTF-8")
			r.Header.Set("Origin", b.baseURL)
		})
	require.Equal(t, http.StatusOK, resp.StatusCode, "body: %s", respBody)
	requireRetried(t, b.pool, job)
}

// chromePath finds a Chromium or Chrome binary: RIVERBANK_CHROME, else the
// usual names on PATH.
func chromePath() string {
	if p := os.Getenv("RIVERBANK_CHROME"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless-shell", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser starts a headless Chromium for the test, or skips the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	path := chromePath()
	if path == "" {
		t.Skip("no Chromium or Chrome found (install the Debian package `chromium`, or set RIVERBANK_CHROME to a binary): skipping the River UI browser test")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.WindowSize(1280, 900))
	if os.Geteuid() == 0 {
		// Chromium refuses to run as root with its sandbox (CI containers).
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancelTab)
	// Generous: a cold Chromium on a busy 2-core machine is slow. Nothing
	// here asserts on time.
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// screenshot saves a PNG of the page in the test's temp dir and, when
// RIVERBANK_UI_SCREENSHOTS names a directory, there too, so an operator
// can look at what the test saw.
func screenshot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(t, err)
	dirs := []string{dir}
	if d := os.Getenv("RIVERBANK_UI_SCREENSHOTS"); d != "" {
		require.NoError(t, os.MkdirAll(d, 0o755))
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		path := filepath.Join(d, name+".png")
		require.NoError(t, os.WriteFile(path, png, 0o644))
		t.Logf("screenshot: %s", path)
	}
}

func location(t *testing.T, ctx context.Context) string {
	t.Helper()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	require.NoError(t, err)
	return loc
}

// An operator opens the UI in a real browser: sent to the login form,
// logs in with the token, sees the discarded job, retries it with the
// UI's own button, and the database shows the retry. A hostile page on
// another site, opened in the same logged-in browser, cannot retry it.
func TestRiverUIBrowser(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	b := setup(t)
	job := discardedJob(t, b.pool)
	shots := t.TempDir()
	// The server listens on 127.0.0.1; "localhost" is another site.
	_, port, err := net.SplitHostPort(strings.TrimPrefix(b.baseURL, "http://"))
	require.NoError(t, err)
	jobURL := fmt.Sprintf("%s/riverui/jobs/%d", b.baseURL, job.ID)

	// A page on another site with a link to the job, and one that posts a
	// retry of it the way a CSRF attack would (a form, text/plain).
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		switch r.URL.Path {
		case "/link":
			fmt.Fprintf(w, `<!doctype html><a id="job" href="%s">job</a>`, jobURL)
		case "/csrf":
			fmt.Fprintf(w, `<!doctype html><form id="f" method="post" enctype="text/plain" action="%s/riverui/api/jobs/retry">
<input name='{"ids":["%d"],"x":"' value='"}'></form><script>document.getElementById("f").submit()</script>`, b.baseURL, job.ID)
		}
	}))
	t.Cleanup(evil.Close)
	evilURL := strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)
	require.NotContains(t, evilURL, port+"/", "a different server")

	// Not logged in: the UI sends the browser to the form.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(b.baseURL+"/riverui/"), chromedp.WaitVisible(chromedp.ID("token"))))
	require.Equal(t, b.baseURL+"/riverui/login?next=%2Friverui%2F", location(t, ctx))
	screenshot(t, ctx, shots, "1-login")

	// A wrong token is refused on the form.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("token"), "not-the-token-0123456789"),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(chromedp.ID("login-error")),
	))

	// The token logs in, and the browser lands in the UI.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Clear(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), testToken),
		chromedp.Click(chromedp.ID("login")),
		chromedp.WaitVisible(`//a[normalize-space()="Discarded"]|//a[starts-with(normalize-space(), "Discarded")]`),
	))
	require.True(t, strings.HasPrefix(location(t, ctx), b.baseURL+"/riverui/"), location(t, ctx))
	cookies, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.cookie`))
	require.NoError(t, err)
	require.Empty(t, cookies, "the session cookie is HttpOnly")

	// The jobs list shows the discarded job.
	jobLink := fmt.Sprintf(`a[href="/riverui/jobs/%d"]`, job.ID)
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(b.baseURL+"/riverui/jobs?state=discarded"),
		chromedp.WaitVisible(chromedp.CSS(jobLink)),
	))
	kind, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(jobLink)))
	require.NoError(t, err)
	require.Equal(t, "e2e_unregistered", strings.TrimSpace(kind))
	screenshot(t, ctx, shots, "2-discarded-jobs")

	// A hostile page in the same browser posts a retry: refused, and the
	// job is untouched.
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate(evilURL+"/csrf")))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
		require.NoError(c, err)
		require.Contains(c, text, "cross_origin_refused")
	}, time.Minute, 100*time.Millisecond)
	requireUntouched(t, b.pool, job)

	// A link to the job on another site opens it (the Strict cookie does
	// not follow a cross-site navigation; one same-origin reload gets it).
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(evilURL+"/link"),
		chromedp.Click(chromedp.ID("job")),
		chromedp.WaitVisible(`//button[normalize-space()="Retry"]`),
	))
	require.Equal(t, jobURL, location(t, ctx))
	screenshot(t, ctx, shots, "3-job")

	// The operator retries it with the UI's button.
	require.NoError(t, chromedp.Do(ctx, chromedp.Click(`//button[normalize-space()="Retry"]`)))
	requireRetried(t, b.pool, job)
	screenshot(t, ctx, shots, "4-retried")

	// Logging out ends the session in this browser.
	require.NoError(t, chromedp.Do(ctx,
		chromedp.Navigate(b.baseURL+"/riverui/login"),
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.Navigate(b.baseURL+"/riverui/jobs"),
		chromedp.WaitVisible(chromedp.ID("token")),
	))
	require.True(t, strings.HasPrefix(location(t, ctx), b.baseURL+"/riverui/login?next="), location(t, ctx))
}
