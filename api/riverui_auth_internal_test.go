package api

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

const (
	uiToken      = "riverui-token-0123456789abcdef"
	uiOtherToken = "riverui-other-token-0123456789"
)

// riverUITestBundle is the River UI's routes on a mux of their own, with a
// stand-in UI that counts the requests that reach it (the guard's whole
// job is deciding which do).
type riverUITestBundle struct {
	auth    *riverUIAuth
	handler http.Handler
	reached *atomic.Int64
}

func setupRiverUI(t *testing.T, tokens ...string) *riverUITestBundle {
	t.Helper()
	if len(tokens) == 0 {
		tokens = []string{uiToken, uiOtherToken}
	}
	b := &riverUITestBundle{reached: &atomic.Int64{}, auth: newRiverUIAuth(tokens, false, slog.New(slog.DiscardHandler))}
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.reached.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "river ui")
	})
	mux := http.NewServeMux()
	registerRiverUI(mux, ui, b.auth)
	b.handler = mux
	return b
}

type uiReq func(*http.Request)

func accept(v string) uiReq         { return func(r *http.Request) { r.Header.Set("Accept", v) } }
func origin(v string) uiReq         { return func(r *http.Request) { r.Header.Set("Origin", v) } }
func fetchSite(v string) uiReq      { return func(r *http.Request) { r.Header.Set("Sec-Fetch-Site", v) } }
func contentType(v string) uiReq    { return func(r *http.Request) { r.Header.Set("Content-Type", v) } }
func basic(user, pass string) uiReq { return func(r *http.Request) { r.SetBasicAuth(user, pass) } }
func bearer(tok string) uiReq {
	return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
}
func withCookie(c *http.Cookie) uiReq { return func(r *http.Request) { r.AddCookie(c) } }
func header(k, v string) uiReq        { return func(r *http.Request) { r.Header.Set(k, v) } }
func form(v url.Values) (string, uiReq) {
	return v.Encode(), contentType("application/x-www-form-urlencoded")
}

func (b *riverUITestBundle) do(t *testing.T, method, target, body string, opts ...uiReq) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(method, "http://riverbank.test"+target, strings.NewReader(body))
	for _, o := range opts {
		o(req)
	}
	rec := httptest.NewRecorder()
	b.handler.ServeHTTP(rec, req)
	return rec
}

// login posts the form as a same-origin browser would and returns the
// session cookie.
func (b *riverUITestBundle) login(t *testing.T, token string, opts ...uiReq) (*httptest.ResponseRecorder, *http.Cookie) {
	t.Helper()
	body, ct := form(url.Values{"token": {token}, "next": {"/riverui/jobs?state=discarded"}})
	rec := b.do(t, http.MethodPost, "/riverui/login", body, append([]uiReq{ct, origin("http://riverbank.test"), fetchSite("same-origin")}, opts...)...)
	for _, c := range rec.Result().Cookies() {
		if c.Name == RiverUISessionCookie {
			return rec, c
		}
	}
	return rec, nil
}

func requireUIProblem(t *testing.T, rec *httptest.ResponseRecorder, status int, code string) {
	t.Helper()
	require.Equal(t, status, rec.Code, "body: %s", rec.Body.String())
	require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
	var p Problem
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p))
	require.Equal(t, code, p.Code)
	require.Equal(t, status, p.Status)
}

func TestRiverUIUnauthenticated(t *testing.T) {
	t.Parallel()
	b := setupRiverUI(t)

	// A browser asking for a page goes to the form, remembering where it
	// was going.
	rec := b.do(t, http.MethodGet, "/riverui/jobs?state=discarded", "", accept("text/html,application/xhtml+xml,*/*;q=0.8"))
	require.Equal(t, http.StatusSeeOther, rec.Code)
	require.Equal(t, "/riverui/login?next=%2Friverui%2Fjobs%3Fstate%3Ddiscarded", rec.Header().Get("Location"))

	// The UI's API and its assets answer 401, without a Basic challenge
	// that would make the browser open its own dialog.
	for _, path := range []string{"/riverui/api/jobs?state=discarded", "/riverui/assets/main.js", "/riverui/"} {
		rec = b.do(t, http.MethodGet, path, "", accept("*/*"))
		requireUIProblem(t, rec, http.StatusUnauthorized, "unauthorized")
		require.Equal(t, `Bearer realm="riverbank"`, rec.Header().Get("WWW-Authenticate"), path)
	}
	// Even a browser asking the API for HTML gets no redirect.
	rec = b.do(t, http.MethodGet, "/riverui/api/jobs", "", accept("text/html"))
	requireUIProblem(t, rec, http.StatusUnauthorized, "unauthorized")

	for _, opt := range []uiReq{basic("admin", "wrong-password-0123456789"), bearer("wrong-token-0123456789"), basic("", ""),
		withCookie(&http.Cookie{Name: RiverUISessionCookie, Value: uiToken})} {
		rec = b.do(t, http.MethodGet, "/riverui/api/jobs", "", opt)
		requireUIProblem(t, rec, http.StatusUnauthorized, "unauthorized")
	}
	require.Zero(t, b.reached.Load())
}

// A link to a job on another site (chat, an alert) arrives without the
// SameSite=Strict cookie: the browser is made to load the URL again from
// this origin, which carries the cookie, before any login form.
func TestRiverUICrossSiteLinkReloadsOnce(t *testing.T) {
	t.Parallel()
	b := setupRiverUI(t)
	nav := []uiReq{accept("text/html"), header("Sec-Fetch-Mode", "navigate")}
	for _, site := range []string{"cross-site", "same-site"} {
		rec := b.do(t, http.MethodGet, "/riverui/jobs/42", "", append(nav, fetchSite(site))...)
		require.Equal(t, http.StatusOK, rec.Code)
		require.Contains(t, rec.Body.String(), `<meta http-equiv="refresh" content="0">`)
		require.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
		require.Contains(t, rec.Header().Get("Content-Security-Policy"), "default-src 'none'")
	}
	// The reload comes from this origin; without a cookie it goes to the
	// form, so there is no loop.
	for _, site := range []string{"same-origin", "none", ""} {
		rec := b.do(t, http.MethodGet, "/riverui/jobs/42", "", append(nav, fetchSite(site))...)
		require.Equal(t, http.StatusSeeOther, rec.Code, site)
	}
	// A cookie that is there but dead goes to the form at once.
	rec := b.do(t, http.MethodGet, "/riverui/jobs/42", "", append(nav, fetchSite("cross-site"),
		withCookie(&http.Cookie{Name: RiverUISessionCookie, Value: "v1.AAAA.AAAA"}))...)
	require.Equal(t, http.StatusSeeOther, rec.Code)
	require.Zero(t, b.reached.Load())
}

func TestRiverUIScriptsKeepBearerAndBasic(t *testing.T) {
	t.Parallel()
	b := setupRiverUI(t)
	for _, opt := range []uiReq{bearer(uiToken), bearer(uiOtherToken), basic("anyone", uiToken), basic("", uiOtherToken), header("Authorization", "bearer "+uiToken)} {
		rec := b.do(t, http.MethodGet, "/riverui/api/jobs", "", opt)
		require.Equal(t, http.StatusOK, rec.Code)
		// A script's state change: JSON, no browser headers.
		rec = b.do(t, http.MethodPost, "/riverui/api/jobs/retry", `{"ids":["1"]}`, opt, contentType("application/json"))
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	}
	require.EqualValues(t, 10, b.reached.Load())
}

func TestRiverUILoginSessionLogout(t *testing.T) {
	t.Parallel()
	b := setupRiverUI(t)

	rec := b.do(t, http.MethodGet, "/riverui/login?next=%2Friverui%2Fjobs", "", accept("text/html"))
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "text/html; charset=utf-8", rec.Header().Get("Content-Type"))
	require.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
	require.Contains(t, rec.Header().Get("Content-Security-Policy"), "frame-ancestors 'none'")
	require.Contains(t, rec.Header().Get("Content-Security-Policy"), "form-action 'self'")
	require.Equal(t, "DENY", rec.Header().Get("X-Frame-Options"))
	page := rec.Body.String()
	require.Contains(t, page, `<form method="post" action="/riverui/login">`)
	require.Contains(t, page, `name="next" value="/riverui/jobs"`)
	require.Contains(t, page, `type="password"`)
	require.NotContains(t, page, "://", "the page loads nothing from elsewhere")

	// A wrong token: the form again, 401, no cookie.
	rec, cookie := b.login(t, "not-the-token-0123456789")
	require.Equal(t, http.StatusUnauthorized, rec.Code)
	require.Contains(t, rec.Body.String(), "That token is not valid.")
	require.Nil(t, cookie)

	rec, cookie = b.login(t, uiToken)
	require.Equal(t, http.StatusSeeOther, rec.Code, rec.Body.String())
	require.Equal(t, "/riverui/jobs?state=discarded", rec.Header().Get("Location"))
	require.NotNil(t, cookie)
	require.True(t, cookie.HttpOnly)
	require.Equal(t, http.SameSiteStrictMode, cookie.SameSite)
	require.Equal(t, "/riverui", cookie.Path)
	require.False(t, cookie.Secure, "plain HTTP")
	require.Equal(t, int(RiverUISessionTTL/time.Second), cookie.MaxAge)
	require.NotContains(t, cookie.Value, uiToken)
	require.Empty(t, cookie.Domain, "host-only")

	// The cookie opens pages, the API and state changes from the UI's own
	// origin (the UI posts its retries as text/plain).
	rec = b.do(t, http.MethodGet, "/riverui/jobs", "", withCookie(cookie), accept("text/html"))
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "DENY", rec.Header().Get("X-Frame-Options"))
	// Also next to stale basic credentials the browser cached before a
	// token rotation (it keeps sending them).
	rec = b.do(t, http.MethodGet, "/riverui/api/jobs", "", withCookie(cookie), basic("", "rotated-out-token-0123456789"))
	require.Equal(t, http.StatusOK, rec.Code)
	rec = b.do(t, http.MethodPost, "/riverui/api/jobs/retry", `{"ids":["1"]}`, withCookie(cookie),
		contentType("text/plain;charset=UTF-8"), origin("http://riverbank.test"), fetchSite("same-origin"))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.EqualValues(t, 3, b.reached.Load())

	// Signed in, the login page offers the UI and a logout button.
	rec = b.do(t, http.MethodGet, "/riverui/login", "", withCookie(cookie))
	require.Contains(t, rec.Body.String(), "You are logged in until")
	require.Contains(t, rec.Body.String(), `action="/riverui/logout"`)

	rec = b.do(t, http.MethodPost, "/riverui/logout", "", withCookie(cookie), origin("http://riverbank.test"))
	require.Equal(t, http.StatusSeeOther, rec.Code)
	require.Equal(t, "/riverui/login?logged_out=1", rec.Header().Get("Location"))
	cleared := rec.Result().Cookies()
	require.Len(t, cleared, 1)
	require.Equal(t, RiverUISessionCookie, cleared[0].Name)
	require.Equal(t, "/riverui", cleared[0].Path)
	require.Negative(t, cleared[0].MaxAge)
	require.Empty(t, cleared[0].Value)
}

func TestRiverUISessionCookieSecureBehindTLS(t *testing.T) {
	t.Parallel()
	b := setupRiverUI(t)
	_, cookie := b.login(t, uiToken, header("X-Forwarded-Proto", "https"))
	require.NotNil(t, cookie)
	require.True(t, cookie.Secure)

	body, ct := form(url.Values{"token": {uiToken}})
	req := httptest.NewRequest(http.MethodPost, "https://riverbank.test/riverui/login", strings.NewReader(body))
	ct(req)
	rec := httptest.NewRecorder()
	b.handler.ServeHTTP(rec, req)
	require.Equal(t, http.StatusSeeOther, rec.Code)
	require.Len(t, rec.Result().Cookies(), 1)
	require.True(t, rec.Result().Cookies()[0].Secure)
}

// Sessions are signed with a key derived from the token that opened them:
// another instance with the same tokens accepts them (a load balancer may
// send the next request anywhere, and a restart keeps them), removing that
// token ends them, and a changed byte breaks the signature.
func TestRiverUISessionKeys(t *testing.T) {
	t.Parallel()
	first := setupRiverUI(t, uiToken, uiOtherToken)
	_, cookie := first.login(t, uiToken)
	require.NotNil(t, cookie)

	other := setupRiverUI(t, uiOtherToken, uiToken) // same tokens, another order, another process
	rec := other.do(t, http.MethodGet, "/riverui/api/jobs", "", withCookie(cookie))
	require.Equal(t, http.StatusOK, rec.Code)

	rotated := setupRiverUI(t, uiOtherToken, "riverui-new-token-0123456789")
	rec = rotated.do(t, http.MethodGet, "/riverui/api/jobs", "", withCookie(cookie))
	requireUIProblem(t, rec, http.StatusUnauthorized, "unauthorized")
	// A page request drops the dead cookie on the way to the form.
	rec = rotated.do(t, http.MethodGet, "/riverui/", "", withCookie(cookie), accept("text/html"))
	require.Equal(t, http.StatusSeeOther, rec.Code)
	require.Len(t, rec.Result().Cookies(), 1)
	require.Negative(t, rec.Result().Cookies()[0].MaxAge)

	// Sessions of the token that stays are untouched by the rotation.
	_, otherCookie := first.login(t, uiOtherToken)
	rec = rotated.do(t, http.MethodGet, "/riverui/api/jobs", "", withCookie(otherCookie))
	require.Equal(t, http.StatusOK, rec.Code)

	for _, bad := range []string{
		cookie.Value[:len(cookie.Value)-2] + flip(cookie.Value[len(cookie.Value)-2:]),
		strings.Replace(cookie.Value, "v1.", "v2.", 1),
		cookie.Value[:10] + flip(cookie.Value[10:11]) + cookie.Value[11:],
		"", "v1..", "v1.AAAA.AAAA", strings.Repeat("a", 300),
	} {
		rec = first.do(t, http.MethodGet, "/riverui/api/jobs", "", withCookie(&http.Cookie{Name: RiverUISessionCookie, Value: bad}))
		requireUIProblem(t, rec, http.StatusUnauthorized, "unauthorized")
	}
}

func flip(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

func TestRiverUISessionExpires(t *testing.T) {
	t.Parallel()
	b := setupRiverUI(t)
	start := time.Date(2026, 11, 20, 9, 0, 0, 0, time.UTC)
	value, expires := b.auth.issueSession(0, start)
	require.True(t, start.Add(RiverUISessionTTL).Equal(expires), expires)

	for _, tc := range []struct {
		at time.Time
		ok bool
	}{
		{start, true},
		{start.Add(RiverUISessionTTL - time.Second), true},
		{start.Add(RiverUISessionTTL), false},
		{start.Add(30 * 24 * time.Hour), false},
	} {
		got, ok := b.auth.checkSession(value, tc.at)
		require.Equal(t, tc.ok, ok, "at %s", tc.at)
		if ok {
			require.True(t, expires.Equal(got), got)
		}
	}

	// Through the handler, with its clock moved past the expiry.
	var now atomic.Pointer[time.Time]
	now.Store(&start)
	b.auth.now = func() time.Time { return *now.Load() }
	cookie := &http.Cookie{Name: RiverUISessionCookie, Value: value}
	require.Equal(t, http.StatusOK, b.do(t, http.MethodGet, "/riverui/api/jobs", "", withCookie(cookie)).Code)
	later := start.Add(RiverUISessionTTL + time.Minute)
	now.Store(&later)
	requireUIProblem(t, b.do(t, http.MethodGet, "/riverui/api/jobs", "", withCookie(cookie)), http.StatusUnauthorized, "unauthorized")
}

// A hostile page can make the operator's browser send requests here with
// cached basic credentials (and, from a sibling subdomain, the cookie):
// every state change it could cause is refused before it reaches the UI.
func TestRiverUIRefusesCrossOriginStateChanges(t *testing.T) {
	t.Parallel()
	b := setupRiverUI(t)
	_, cookie := b.login(t, uiToken)
	require.NotNil(t, cookie)

	for name, opts := range map[string][]uiReq{
		"foreign Origin":          {origin("https://evil.example")},
		"null Origin":             {origin("null")},
		"cross-site fetch":        {fetchSite("cross-site")},
		"sibling subdomain":       {fetchSite("same-site"), origin("http://other.riverbank.test")},
		"cross-site, same Origin": {fetchSite("cross-site"), origin("http://riverbank.test")},
	} {
		for _, auth := range []uiReq{basic("", uiToken), withCookie(cookie), bearer(uiToken)} {
			for _, r := range []struct{ method, path, ct string }{
				{http.MethodPost, "/riverui/api/jobs/retry", "text/plain"},
				{http.MethodPost, "/riverui/api/jobs/delete", "application/json"},
				{http.MethodPost, "/riverui/api/jobs/cancel", "application/x-www-form-urlencoded"},
				{http.MethodPut, "/riverui/api/queues/default/pause", ""},
				{http.MethodPatch, "/riverui/api/queues/default", "application/json"},
				{http.MethodDelete, "/riverui/anything", ""},
			} {
				rec := b.do(t, r.method, r.path, `{"ids":["1"]}`, append([]uiReq{auth, contentType(r.ct)}, opts...)...)
				requireUIProblem(t, rec, http.StatusForbidden, "cross_origin_refused")
				require.Contains(t, rec.Body.String(), "cross-origin", name)
			}
		}
		// Login CSRF: no session may be planted, and none ended, from
		// elsewhere.
		body, ct := form(url.Values{"token": {uiToken}})
		rec := b.do(t, http.MethodPost, "/riverui/login", body, append([]uiReq{ct}, opts...)...)
		requireUIProblem(t, rec, http.StatusForbidden, "cross_origin_refused")
		require.Empty(t, rec.Result().Cookies(), name)
		rec = b.do(t, http.MethodPost, "/riverui/logout", "", append([]uiReq{withCookie(cookie)}, opts...)...)
		requireUIProblem(t, rec, http.StatusForbidden, "cross_origin_refused")
		require.Empty(t, rec.Result().Cookies())
	}
	require.Zero(t, b.reached.Load())

	// Reads from anywhere are fine: the same-origin policy keeps their
	// answers from the hostile page.
	rec := b.do(t, http.MethodGet, "/riverui/api/jobs", "", basic("", uiToken), origin("https://evil.example"), fetchSite("cross-site"))
	require.Equal(t, http.StatusOK, rec.Code)
}

// A state change that carries neither Sec-Fetch-Site nor Origin is a
// script or a browser too old to say where it comes from: it must be JSON,
// which such a browser could only send cross-origin after a CORS preflight
// that is never granted.
func TestRiverUIStateChangesWithoutBrowserHeadersNeedJSON(t *testing.T) {
	t.Parallel()
	b := setupRiverUI(t)
	for _, ct := range []string{"", "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"} {
		rec := b.do(t, http.MethodPost, "/riverui/api/jobs/retry", `{"ids":["1"]}`, basic("", uiToken), contentType(ct))
		requireUIProblem(t, rec, http.StatusUnsupportedMediaType, "unsupported_media_type")
	}
	require.Zero(t, b.reached.Load())
	for _, ct := range []string{"application/json", "application/json; charset=utf-8"} {
		rec := b.do(t, http.MethodPost, "/riverui/api/jobs/retry", `{"ids":["1"]}`, basic("", uiToken), contentType(ct))
		require.Equal(t, http.StatusOK, rec.Code)
	}
	// A same-origin browser request may be text/plain: River UI sends its
	// retries that way.
	rec := b.do(t, http.MethodPost, "/riverui/api/jobs/retry", `{"ids":["1"]}`, basic("", uiToken), contentType("text/plain;charset=UTF-8"), origin("http://riverbank.test"))
	require.Equal(t, http.StatusOK, rec.Code)
	require.EqualValues(t, 3, b.reached.Load())
}

// After login the browser goes back where it was heading, but only to a
// River UI page on this server: the form must not be an open redirect.
func TestRiverUILoginNextIsNotAnOpenRedirect(t *testing.T) {
	t.Parallel()
	b := setupRiverUI(t)
	for next, want := range map[string]string{
		"/riverui/jobs/12?x=1":           "/riverui/jobs/12?x=1",
		"/riverui/queues":                "/riverui/queues",
		"":                               "/riverui/",
		"https://evil.example/riverui/":  "/riverui/",
		"//evil.example/riverui/":        "/riverui/",
		"/\\evil.example":                "/riverui/",
		"/riverui/\\evil.example":        "/riverui/",
		"/riverui/../v1/system/info":     "/riverui/",
		"/riverui/%2e%2e/v1/system/info": "/riverui/",
		"/v1/system/info":                "/riverui/",
		"/riverui/login?next=/riverui/":  "/riverui/",
		"/riverui/x\r\nSet-Cookie: a=b":  "/riverui/",
		"javascript:alert(1)//riverui/":  "/riverui/",
		"/riverui@evil.example/riverui/": "/riverui/",
		"/riverui/logout":                "/riverui/",
	} {
		body, ct := form(url.Values{"token": {uiToken}, "next": {next}})
		rec := b.do(t, http.MethodPost, "/riverui/login", body, ct)
		require.Equal(t, http.StatusSeeOther, rec.Code, next)
		require.Equal(t, want, rec.Header().Get("Location"), "next=%q", next)

		rec = b.do(t, http.MethodGet, "/riverui/login?next="+url.QueryEscape(next), "")
		require.Contains(t, rec.Body.String(), `name="next" value="`+templateEscape(want)+`"`, "next=%q", next)
	}
}

func templateEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;").Replace(s)
}

func TestRiverUIAuthOff(t *testing.T) {
	t.Parallel()
	reached := 0
	mux := http.NewServeMux()
	registerRiverUI(mux, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++ }),
		newRiverUIAuth(nil, true, slog.New(slog.DiscardHandler)))
	do := func(method, path string, h map[string]string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, "http://riverbank.test"+path, strings.NewReader(`{}`))
		for k, v := range h {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		return rec
	}
	require.Equal(t, http.StatusOK, do(http.MethodGet, "/riverui/", map[string]string{"Accept": "text/html"}).Code)
	rec := do(http.MethodGet, "/riverui/login", nil)
	require.Equal(t, http.StatusSeeOther, rec.Code)
	require.Equal(t, "/riverui/", rec.Header().Get("Location"))
	// Without auth a hostile page needs no credentials at all: the
	// cross-origin refusal matters even more.
	rec = do(http.MethodPost, "/riverui/api/jobs/delete", map[string]string{"Origin": "https://evil.example", "Content-Type": "text/plain"})
	requireUIProblem(t, rec, http.StatusForbidden, "cross_origin_refused")
	require.Equal(t, 1, reached)
}
