package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// tokenSet holds the accepted API tokens as SHA-256 digests and checks a
// presented token against all of them in constant time.
//
// Why digests: subtle.ConstantTimeCompare returns at once when the lengths
// differ, so comparing the raw strings would tell a timing attacker the
// length of every configured token. Digests all have the same length, so
// each comparison costs the same whatever was presented. Why no early
// exit: the loop always compares against every token and ORs the results,
// so the time taken does not say which token matched, or whether any did.
// It grows with the number of configured tokens, which is configuration,
// not a secret an attacker can learn anything from by choosing input.
type tokenSet struct {
	digests [][sha256.Size]byte
}

func newTokenSet(tokens []string) *tokenSet {
	s := &tokenSet{}
	for _, t := range tokens {
		if t == "" {
			// An empty token would match an empty credential.
			continue
		}
		s.digests = append(s.digests, sha256.Sum256([]byte(t)))
	}
	return s
}

// match reports whether presented is exactly one of the tokens: same
// bytes, same case, no trimming.
func (s *tokenSet) match(presented string) bool {
	d := sha256.Sum256([]byte(presented))
	ok := 0
	for i := range s.digests {
		ok |= subtle.ConstantTimeCompare(d[:], s.digests[i][:])
	}
	return ok == 1 && presented != ""
}

// bearerToken returns the token of an `Authorization: Bearer <token>`
// header (RFC 6750 §2.1): the scheme in any case (RFC 9110 §11.1), one or
// more spaces, then the token exactly as sent, up to the end of the field.
// Nothing is trimmed from the token: a token with trailing whitespace or
// anything else after it is a different token, and does not match. (HTTP
// itself strips spaces and tabs around a whole field value before the
// server sees it, RFC 9110 §5.5; that is the one allowance.)
//
// A request with more than one Authorization field is refused: which one a
// proxy or the server would use is ambiguous, and a client never needs two.
func bearerToken(h http.Header) (string, bool) {
	values := h.Values("Authorization")
	if len(values) != 1 {
		return "", false
	}
	scheme, rest, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok := strings.TrimLeft(rest, " ")
	if tok == "" {
		return "", false
	}
	return tok, true
}
