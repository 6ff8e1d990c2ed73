package webhook

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SecretPrefix starts every signing secret, so a leaked one is
// recognisable (secret scanners, logs).
const SecretPrefix = "whsec_"

// newSecret returns a signing secret: the prefix and 32 random bytes,
// base64url.
func newSecret() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate secret: %w", err)
	}
	return SecretPrefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// keyring encrypts signing secrets at rest with AES-256-GCM. The first key
// seals; every key opens, found by its id (stored with the ciphertext), so
// a key is rotated by putting a new one first and keeping the old one
// until no subscription uses it.
type keyring struct {
	seal  *sealKey
	byID  map[string]cipher.AEAD
	count int
}

type sealKey struct {
	id   string
	aead cipher.AEAD
}

// keyID names a key without revealing it: 8 hex characters of a hash of
// it under a label.
func keyID(key []byte) string {
	h := sha256.Sum256(append([]byte("riverbank webhook key id\x00"), key...))
	return hex.EncodeToString(h[:4])
}

func newKeyring(keys [][]byte) (*keyring, error) {
	kr := &keyring{byID: map[string]cipher.AEAD{}}
	for _, k := range keys {
		if len(k) != 32 {
			return nil, errors.New("webhook keys must be 32 bytes")
		}
		block, err := aes.NewCipher(k)
		if err != nil {
			return nil, fmt.Errorf("webhook key: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("webhook key: %w", err)
		}
		id := keyID(k)
		if kr.seal == nil {
			kr.seal = &sealKey{id: id, aead: aead}
		}
		kr.byID[id] = aead
		kr.count++
	}
	return kr, nil
}

// additionalData binds a ciphertext to its subscription: a ciphertext
// copied onto another row does not open.
func additionalData(subscriptionID int64) []byte {
	return []byte("riverbank webhook secret v1 " + strconv.FormatInt(subscriptionID, 10))
}

// sealSecret encrypts a subscription's secret with the first key.
func (kr *keyring) sealSecret(subscriptionID int64, secret string) (keyID string, nonce, ciphertext []byte, err error) {
	if kr.seal == nil {
		return "", nil, nil, errors.New("no webhook key")
	}
	nonce = make([]byte, kr.seal.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", nil, nil, fmt.Errorf("generate nonce: %w", err)
	}
	return kr.seal.id, nonce, kr.seal.aead.Seal(nil, nonce, []byte(secret), additionalData(subscriptionID)), nil
}

// openSecret decrypts a subscription's secret. The errors name the key id
// only, never key or secret material.
func (kr *keyring) openSecret(subscriptionID int64, keyID string, nonce, ciphertext []byte) (string, error) {
	aead, ok := kr.byID[keyID]
	if !ok {
		return "", fmt.Errorf("cannot decrypt the subscription's signing secret: its key %s is not in RIVERBANK_WEBHOOK_KEY", keyID)
	}
	plain, err := aead.Open(nil, nonce, ciphertext, additionalData(subscriptionID))
	if err != nil {
		return "", fmt.Errorf("cannot decrypt the subscription's signing secret with key %s: the stored ciphertext is not this subscription's", keyID)
	}
	return string(plain), nil
}

// Sign returns the v1 signature of a delivery: hex HMAC-SHA256 keyed with
// the secret (the whole string, prefix included) of "<t>.<body>", where t
// is the unix time in the header.
func Sign(secret string, t int64, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strconv.FormatInt(t, 10)))
	mac.Write([]byte("."))
	mac.Write(body)
	return hex.EncodeToString(mac.Sum(nil))
}

// SignatureHeader returns the Riverbank-Signature header of a delivery:
// "t=<unix>,v1=<hex>".
func SignatureHeader(secret string, t int64, body []byte) string {
	return "t=" + strconv.FormatInt(t, 10) + ",v1=" + Sign(secret, t, body)
}

// Verify checks a Riverbank-Signature header against the body a receiver
// got: a v1 signature must match (compared in constant time) and t must be
// within tolerance of now, which bounds replays. Receivers in Go may use
// it; the README shows the same check in a few lines of any language.
func Verify(secret, header string, body []byte, tolerance time.Duration, now time.Time) error {
	var t int64
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return errors.New("signature header has an invalid t")
			}
			t = n
		case "v1":
			sigs = append(sigs, v)
		}
	}
	if t == 0 || len(sigs) == 0 {
		return errors.New("signature header must have t and v1")
	}
	if d := now.Sub(time.Unix(t, 0)); d > tolerance || d < -tolerance {
		return errors.New("signature timestamp is outside the tolerance")
	}
	want := []byte(Sign(secret, t, body))
	for _, s := range sigs {
		if hmac.Equal([]byte(s), want) {
			return nil
		}
	}
	return errors.New("no v1 signature matches")
}
