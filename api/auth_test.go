package api

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const (
	authTestToken = "tok-0123456789abcdefXYZ"
	authTestOther = "other-token-9876543210"
)

func TestTokenSetMatch(t *testing.T) {
	t.Parallel()
	s := newTokenSet([]string{authTestToken, authTestOther, ""})
	for _, tt := range []struct {
		name      string
		presented string
		want      bool
	}{
		{"FirstToken", authTestToken, true},
		{"SecondToken", authTestOther, true},
		{"Empty", "", false},
		{"UpperCased", strings.ToUpper(authTestToken), false},
		{"LowerCased", strings.ToLower(authTestToken), false},
		{"Prefix", authTestToken[:len(authTestToken)-1], false},
		{"Longer", authTestToken + "0", false},
		{"TrailingSpace", authTestToken + " ", false},
		{"LeadingSpace", " " + authTestToken, false},
		{"TrailingNewline", authTestToken + "\n", false},
		{"BothJoined", authTestToken + "," + authTestOther, false},
		{"NUL", authTestToken + "\x00", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, s.match(tt.presented))
		})
	}
	// No configured token (only an empty one) matches nothing, not even
	// an empty credential.
	require.False(t, newTokenSet([]string{""}).match(""))
	require.False(t, newTokenSet(nil).match(""))
}

// TestAuthMiddlewareHeaderForms: which Authorization fields pass. The
// handler is called directly, so fields that HTTP would normalise on the
// wire (trailing spaces and tabs) reach the middleware as they are.
func TestAuthMiddlewareHeaderForms(t *testing.T) {
	t.Parallel()
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	for _, tt := range []struct {
		name   string
		path   string
		values []string // Authorization fields, in order
		pass   bool
	}{
		{"Bearer", "/v1/orders", []string{"Bearer " + authTestToken}, true},
		{"SecondToken", "/v1/orders", []string{"Bearer " + authTestOther}, true},
		{"SchemeLowerCase", "/v1/orders", []string{"bearer " + authTestToken}, true},
		{"SchemeUpperCase", "/v1/orders", []string{"BEARER " + authTestToken}, true},
		{"SeveralSpacesAfterScheme", "/v1/orders", []string{"Bearer   " + authTestToken}, true},
		{"Metrics", "/metrics", []string{"Bearer " + authTestToken}, true},

		{"Missing", "/v1/orders", nil, false},
		{"EmptyField", "/v1/orders", []string{""}, false},
		{"WrongToken", "/v1/orders", []string{"Bearer wrong-token-0123456789"}, false},
		{"UpperCasedToken", "/v1/orders", []string{"Bearer " + strings.ToUpper(authTestToken)}, false},
		{"TrailingSpace", "/v1/orders", []string{"Bearer " + authTestToken + " "}, false},
		{"TrailingTab", "/v1/orders", []string{"Bearer " + authTestToken + "\t"}, false},
		{"TrailingNBSP", "/v1/orders", []string{"Bearer " + authTestToken + "\u00a0"}, false},
		{"TrailingWord", "/v1/orders", []string{"Bearer " + authTestToken + " extra"}, false},
		{"TabAfterScheme", "/v1/orders", []string{"Bearer\t" + authTestToken}, false},
		{"NoSpace", "/v1/orders", []string{"Bearer" + authTestToken}, false},
		{"SchemeOnly", "/v1/orders", []string{"Bearer"}, false},
		{"SchemeAndSpace", "/v1/orders", []string{"Bearer "}, false},
		{"TokenWithoutScheme", "/v1/orders", []string{authTestToken}, false},
		{"OtherScheme", "/v1/orders", []string{"Token " + authTestToken}, false},
		{"BasicOnAPI", "/v1/orders", []string{basic("x", authTestToken)}, false},
		{"BasicOnMetrics", "/metrics", []string{basic("x", authTestToken)}, false},
		// /riverui/ has its own authentication (riverui_auth.go): its
		// basic-auth forms are walked end to end by TestAuthEveryOperation.
		{"TwoFieldsWrongFirst", "/v1/orders", []string{"Bearer wrong-token-0123456789", "Bearer " + authTestToken}, false},
		{"TwoFieldsRightFirst", "/v1/orders", []string{"Bearer " + authTestToken, "Bearer wrong-token-0123456789"}, false},
		{"TwoTokensInOneField", "/v1/orders", []string{"Bearer " + authTestToken + "," + authTestOther}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			called := false
			h := authMiddleware([]string{authTestToken, authTestOther}, false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				called = true
				w.WriteHeader(http.StatusNoContent)
			}))
			req := httptest.NewRequest(http.MethodGet, tt.path, nil)
			for _, v := range tt.values {
				req.Header.Add("Authorization", v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if tt.pass {
				require.True(t, called)
				require.Equal(t, http.StatusNoContent, rec.Code)
				return
			}
			require.False(t, called, "a rejected request never reaches the handler")
			require.Equal(t, http.StatusUnauthorized, rec.Code)
			require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"))
			require.NotEmpty(t, rec.Header().Get("WWW-Authenticate"))
			var p Problem
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p))
			require.Equal(t, "unauthorized", p.Code)
			require.NotContains(t, rec.Body.String(), authTestToken)
		})
	}
}

// BenchmarkTokenSetMatch: the cost of a check does not depend on which
// token matches, whether one does, or how long the presented token is.
func BenchmarkTokenSetMatch(b *testing.B) {
	tokens := make([]string, 8)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("token-%02d-0123456789abcdef0123456789", i)
	}
	s := newTokenSet(tokens)
	for _, bb := range []struct{ name, presented string }{
		{"MatchesFirst", tokens[0]},
		{"MatchesLast", tokens[len(tokens)-1]},
		{"NoMatchSameLength", "token-99-0123456789abcdef0123456789"},
		{"NoMatchShort", "x"},
	} {
		b.Run(bb.name, func(b *testing.B) {
			for b.Loop() {
				s.match(bb.presented)
			}
		})
	}
}
