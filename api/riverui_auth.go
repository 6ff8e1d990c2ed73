package api

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"riverbank"
)

// The River UI is for operators in a browser, so besides the API's
// `Authorization` header it has a login form and a session cookie:
//
//   - GET /riverui/login renders a form (served from the binary); POST
//     /riverui/login checks the token against RIVERBANK_API_TOKENS in
//     constant time and sets the session cookie; POST /riverui/logout
//     clears it.
//   - The cookie is HttpOnly, SameSite=Strict, Path=/riverui, and Secure
//     when the request came over TLS (or X-Forwarded-Proto says https). Its
//     value is not the token but an HMAC-signed expiry (RiverUISessionTTL,
//     absolute, not sliding) and nonce. The HMAC key is derived from the
//     token that logged in, so every instance behind a load balancer
//     accepts every other's sessions and survives restarts, while removing
//     a token from RIVERBANK_API_TOKENS ends exactly the sessions it opened.
//     Sessions are stateless: logout deletes the cookie in that browser,
//     and a copied cookie stays valid until it expires or its token is
//     rotated out.
//   - Bearer tokens and HTTP basic auth (any user, the token as password)
//     still work, for scripts.
//   - A browser asking for a UI page without credentials is redirected to
//     the form, after one same-origin reload when it arrived by a link from
//     another site (the Strict cookie does not follow such a navigation).
//     The UI's API and assets answer 401 problem+json instead, without a
//     Basic challenge (which would make the browser pop up its own dialog
//     on every poll once a session expires).
//   - Cross-origin state changes are refused before anything else, because
//     browsers attach cached basic credentials (and, within a site, cookies)
//     to requests a hostile page makes: see refuseCrossOrigin and needsJSON.
//   - A stolen cookie lets its holder test guesses of the token that signed
//     it offline, as any key derived from the token would; tokens are long
//     and random (16+ characters, enforced by the configuration).

// RiverUISessionTTL is how long a River UI login lasts.
const RiverUISessionTTL = 12 * time.Hour

// RiverUISessionCookie is the name of the River UI session cookie.
const RiverUISessionCookie = "riverbank_riverui_session"

const (
	riverUIPrefix  = "/riverui"
	riverUILogin   = "/riverui/login"
	riverUILogout  = "/riverui/logout"
	riverUIAPIPath = "/riverui/api/"
	// sessionKeyLabel separates session keys from any other use of the
	// tokens; bump the version to end every session at once.
	sessionKeyLabel = "riverbank river ui session v1"
	sessionVersion  = "v1"
	// maxTokenLen bounds what a login compares; tokens are far shorter.
	maxTokenLen = 1024
)

// codeCrossOriginRefused is the problem code of a state-changing River UI
// request that a browser sent from another origin.
const codeCrossOriginRefused = "cross_origin_refused"

//go:embed riverui_login.html
var loginPageHTML string

var loginPage = template.Must(template.New("login").Parse(loginPageHTML))

// riverUIAuth guards the River UI and serves its login form.
type riverUIAuth struct {
	off    bool
	logger *slog.Logger
	// digests are SHA-256 of the tokens, so comparing a candidate takes
	// the same time whatever its length.
	digests [][sha256.Size]byte
	// keys[i] signs the sessions opened with token i.
	keys [][]byte
	// csrf refuses cross-origin state changes (Sec-Fetch-Site, Origin).
	csrf *http.CrossOriginProtection
	now  func() time.Time
}

func newRiverUIAuth(tokens []string, off bool, logger *slog.Logger) *riverUIAuth {
	a := &riverUIAuth{off: off, logger: logger, csrf: http.NewCrossOriginProtection(), now: time.Now}
	for _, t := range tokens {
		a.digests = append(a.digests, sha256.Sum256([]byte(t)))
		m := hmac.New(sha256.New, []byte(t))
		m.Write([]byte(sessionKeyLabel))
		a.keys = append(a.keys, m.Sum(nil))
	}
	return a
}

// isRiverUIPath reports whether path belongs to the River UI (guarded by
// riverUIAuth rather than the API's bearer check).
func isRiverUIPath(path string) bool {
	return path == riverUIPrefix || strings.HasPrefix(path, riverUIPrefix+"/")
}

// tokenIndex returns which configured token tok is, or -1. Every token is
// compared, in constant time over fixed-length digests.
func (a *riverUIAuth) tokenIndex(tok string) int {
	if tok == "" || len(tok) > maxTokenLen {
		return -1
	}
	d := sha256.Sum256([]byte(tok))
	idx := -1
	for i := range a.digests {
		if subtle.ConstantTimeCompare(d[:], a.digests[i][:]) == 1 {
			idx = i
		}
	}
	return idx
}

// issueSession returns a cookie value for a login with token idx:
// "v1.<base64url(expiry unix seconds || 16-byte nonce)>.<base64url(HMAC)>".
func (a *riverUIAuth) issueSession(idx int, now time.Time) (value string, expires time.Time) {
	expires = now.Add(RiverUISessionTTL).Truncate(time.Second)
	payload := make([]byte, 8, 8+16)
	binary.BigEndian.PutUint64(payload, uint64(expires.Unix()))
	payload = append(payload, make([]byte, 16)...)
	_, _ = rand.Read(payload[8:])
	signed := sessionVersion + "." + base64.RawURLEncoding.EncodeToString(payload)
	return signed + "." + base64.RawURLEncoding.EncodeToString(sessionMAC(a.keys[idx], signed)), expires
}

func sessionMAC(key []byte, signed string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(signed))
	return m.Sum(nil)
}

// checkSession returns the expiry of a valid, unexpired session value.
func (a *riverUIAuth) checkSession(value string, now time.Time) (time.Time, bool) {
	if len(value) > 256 {
		return time.Time{}, false
	}
	i := strings.LastIndexByte(value, '.')
	if i < 0 {
		return time.Time{}, false
	}
	signed := value[:i]
	mac, err := base64.RawURLEncoding.DecodeString(value[i+1:])
	if err != nil {
		return time.Time{}, false
	}
	ok := false
	for _, k := range a.keys {
		if hmac.Equal(mac, sessionMAC(k, signed)) {
			ok = true
		}
	}
	version, enc, found := strings.Cut(signed, ".")
	if !ok || !found || version != sessionVersion {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || len(payload) != 8+16 {
		return time.Time{}, false
	}
	expires := time.Unix(int64(binary.BigEndian.Uint64(payload)), 0).UTC()
	if !now.Before(expires) {
		return time.Time{}, false
	}
	return expires, true
}

// session returns the expiry of r's valid session cookie, if any.
func (a *riverUIAuth) session(r *http.Request) (time.Time, bool) {
	c, err := r.Cookie(RiverUISessionCookie)
	if err != nil {
		return time.Time{}, false
	}
	return a.checkSession(c.Value, a.now())
}

// authenticated reports whether r carries a valid bearer token, basic
// auth password or session cookie. Any one suffices: a browser that still
// sends basic credentials it cached before a token rotation must be able
// to use the session it then opens with the form.
func (a *riverUIAuth) authenticated(r *http.Request) bool {
	// The bearer token exactly as /v1 takes it (bearerToken): no trimming.
	if tok, ok := bearerToken(r.Header); ok && a.tokenIndex(tok) >= 0 {
		return true
	}
	if _, pw, ok := r.BasicAuth(); ok && a.tokenIndex(pw) >= 0 {
		return true
	}
	_, ok := a.session(r)
	return ok
}

// secureRequest reports whether the browser reached us over TLS, directly
// or through a TLS-terminating proxy. A client that lies only withholds
// the cookie from itself over plain HTTP.
func secureRequest(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func sessionCookie(r *http.Request, value string, maxAge int, expires time.Time) *http.Cookie {
	return &http.Cookie{
		Name: RiverUISessionCookie, Value: value, Path: riverUIPrefix, MaxAge: maxAge, Expires: expires,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secureRequest(r),
	}
}

// setUIHeaders forbids framing (clickjacking: a hostile page could frame
// the UI, which cached basic credentials would authenticate) and keeps
// URLs (job ids, filters) out of Referer headers sent elsewhere.
func setUIHeaders(h http.Header) {
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "frame-ancestors 'none'")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("X-Content-Type-Options", "nosniff")
}

// refuseCrossOrigin answers 403 cross_origin_refused and returns true when
// r changes state (not GET, HEAD or OPTIONS) and the browser says it comes
// from another origin: Sec-Fetch-Site other than same-origin or none, or
// else an Origin whose host is not this request's Host (Go's
// http.CrossOriginProtection). Requests with neither header are not from a
// current browser and pass; see needsJSON for what they must send instead.
func (a *riverUIAuth) refuseCrossOrigin(w http.ResponseWriter, r *http.Request) bool {
	if err := a.csrf.Check(r); err != nil {
		a.logger.Info("river ui: cross-origin request refused", "method", r.Method, "path", r.URL.Path,
			"origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"), "remote", r.RemoteAddr)
		writeProblem(w, newProblem(http.StatusForbidden, codeCrossOriginRefused,
			"cross-origin requests may not change state in the River UI; open the UI on this server's own address"))
		return true
	}
	return false
}

// needsJSON answers 415 and returns true for a state change to the UI's
// API that carries neither Sec-Fetch-Site nor Origin and is not
// application/json. Such a request is a script (which sends JSON) or a
// browser too old to send either header; requiring JSON from it means a
// cross-origin page in that browser could only send it after a CORS
// preflight, which this server never grants. The UI itself sends its
// retries as text/plain, but always from a browser that sends Origin.
func needsJSON(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions ||
		!strings.HasPrefix(r.URL.Path, riverUIAPIPath) ||
		r.Header.Get("Sec-Fetch-Site") != "" || r.Header.Get("Origin") != "" {
		return false
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil && mt == "application/json" {
		return false
	}
	writeProblem(w, newProblem(http.StatusUnsupportedMediaType, "unsupported_media_type",
		"River UI API requests that change state must send Content-Type: application/json"))
	return true
}

// wantsPage reports whether r is a browser asking for a UI page (which an
// unauthenticated browser should answer with the login form) rather than
// the UI's API or an asset.
func wantsPage(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		!strings.HasPrefix(r.URL.Path, riverUIAPIPath) && r.URL.Path != "/riverui/api" &&
		strings.Contains(r.Header.Get("Accept"), "text/html")
}

// crossSiteNavigation reports whether r is a top-level navigation that
// started on another site: a link to a job in a chat message or an alert.
// The browser withholds SameSite=Strict cookies from it, so its lack of a
// session proves nothing.
func crossSiteNavigation(r *http.Request) bool {
	site := r.Header.Get("Sec-Fetch-Site")
	return r.Header.Get("Sec-Fetch-Mode") == "navigate" && (site == "cross-site" || site == "same-site")
}

// reloadPage makes the browser load the same URL again, now as a
// navigation from this origin, which carries the SameSite=Strict session
// cookie; without one, that request is sent to the login form as usual.
const reloadPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="0">
<meta name="robots" content="noindex, nofollow"><title>riverbank River UI</title></head>
<body><p>Opening the River UI…</p></body></html>
`

func writeReloadPage(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'")
	_, _ = io.WriteString(w, reloadPage)
}

// guard wraps the River UI handler: security headers, cross-origin
// refusal, then authentication.
func (a *riverUIAuth) guard(ui http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		setUIHeaders(w.Header())
		if a.refuseCrossOrigin(w, r) || needsJSON(w, r) {
			return
		}
		if a.off || a.authenticated(r) {
			ui.ServeHTTP(w, r)
			return
		}
		if wantsPage(r) {
			_, err := r.Cookie(RiverUISessionCookie)
			if err != nil && crossSiteNavigation(r) {
				writeReloadPage(w)
				return
			}
			if err == nil {
				// Expired or signed by a rotated-out token: drop it.
				http.SetCookie(w, sessionCookie(r, "", -1, time.Time{}))
			}
			http.Redirect(w, r, riverUILogin+"?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="riverbank"`)
		detail := "log in at " + riverUILogin + ", or send an API token as a bearer token or as the basic auth password"
		if r.Header.Get("Authorization") != "" {
			detail = "invalid credentials"
		}
		writeProblem(w, newProblem(http.StatusUnauthorized, riverbank.EUNAUTHORIZED, detail))
	})
}

// safeNext returns where to go after logging in: next if it is a path in
// the River UI on this server, else the UI's start page. Anything else
// (another host, "//host", backslashes) would make the form an open
// redirect.
func safeNext(next string) string {
	const home = riverUIPrefix + "/"
	if !strings.HasPrefix(next, home) || strings.ContainsAny(next, "\\\r\n") || strings.HasPrefix(next, riverUILogin) || strings.HasPrefix(next, riverUILogout) {
		return home
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || !isRiverUIPath(u.Path) || strings.Contains(u.Path, "..") {
		return home
	}
	return next
}

type loginPageData struct {
	Next     string
	Error    string
	Notice   string
	SignedIn bool
	Expires  string
	TTL      string
}

func (a *riverUIAuth) renderLogin(w http.ResponseWriter, status int, data loginPageData) {
	data.TTL = fmt.Sprintf("%g hours", RiverUISessionTTL.Hours())
	var buf bytes.Buffer
	if err := loginPage.Execute(&buf, data); err != nil {
		a.logger.Error("river ui: render login page", "error", err)
		writeProblem(w, newProblem(http.StatusInternalServerError, riverbank.EINTERNAL, "internal error"))
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// The page has no script; the one form posts to this server.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// loginPage is GET /riverui/login: the form, or when the browser already
// has a session, where it leads and a logout button.
func (a *riverUIAuth) loginPage(w http.ResponseWriter, r *http.Request) {
	setUIHeaders(w.Header())
	next := safeNext(r.URL.Query().Get("next"))
	if a.off {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	data := loginPageData{Next: next}
	if exp, ok := a.session(r); ok {
		data.SignedIn, data.Expires = true, exp.UTC().Format(time.RFC3339)
	}
	if r.URL.Query().Get("logged_out") == "1" {
		data.Notice = "You are logged out."
	}
	a.renderLogin(w, http.StatusOK, data)
}

// login is POST /riverui/login.
func (a *riverUIAuth) login(w http.ResponseWriter, r *http.Request) {
	setUIHeaders(w.Header())
	// Login CSRF: a hostile page must not log the operator's browser in
	// (with a token of the attacker's choosing) any more than it may act
	// in it.
	if a.refuseCrossOrigin(w, r) {
		return
	}
	if err := r.ParseForm(); err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeProblem(w, newProblem(http.StatusRequestEntityTooLarge, "request_too_large", "login form too large"))
			return
		}
		writeProblem(w, newProblem(http.StatusBadRequest, riverbank.EINVALID, "the login form could not be read"))
		return
	}
	next := safeNext(r.PostForm.Get("next"))
	if a.off {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	// A pasted token may bring a line break or ASCII blanks (tokens have
	// none); anything else, e.g. a no-break space, is kept and fails.
	idx := a.tokenIndex(strings.Trim(r.PostForm.Get("token"), " \t\r\n"))
	if idx < 0 {
		a.logger.Info("river ui: login failed", "remote", r.RemoteAddr)
		a.renderLogin(w, http.StatusUnauthorized, loginPageData{Next: next, Error: "That token is not valid."})
		return
	}
	value, expires := a.issueSession(idx, a.now())
	http.SetCookie(w, sessionCookie(r, value, int(RiverUISessionTTL/time.Second), expires))
	a.logger.Info("river ui: login", "token_index", idx, "expires", expires, "remote", r.RemoteAddr)
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// logout is POST /riverui/logout. It needs no session, so an expired one
// can still be cleared.
func (a *riverUIAuth) logout(w http.ResponseWriter, r *http.Request) {
	setUIHeaders(w.Header())
	if a.refuseCrossOrigin(w, r) {
		return
	}
	http.SetCookie(w, sessionCookie(r, "", -1, time.Time{}))
	http.Redirect(w, r, riverUILogin+"?logged_out=1", http.StatusSeeOther)
}

// registerRiverUI mounts the River UI at /riverui/ behind riverUIAuth,
// with its login and logout routes.
func registerRiverUI(mux *http.ServeMux, ui http.Handler, a *riverUIAuth) {
	mux.HandleFunc("GET "+riverUILogin, a.loginPage)
	mux.HandleFunc("POST "+riverUILogin, a.login)
	mux.HandleFunc("POST "+riverUILogout, a.logout)
	mux.Handle(riverUIPrefix+"/", a.guard(ui))
	mux.Handle("GET "+riverUIPrefix, http.RedirectHandler(riverUIPrefix+"/", http.StatusMovedPermanently))
}
