package riverbank

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ValidText reports whether s can be stored in a Postgres text column:
// valid UTF-8 without NUL characters. Input that fails it is a client
// error, never a database error.
func ValidText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// Error codes are machine-readable and stable: clients switch on them. The
// HTTP layer owns the mapping from code to status (api/errors.go).
const (
	EBALANCEOUTOFRANGE   = "balance_out_of_range"
	ECONFLICT            = "conflict"
	ECURRENCYREQUIRED    = "currency_required"
	ECURSOREXPIRED       = "cursor_expired"
	EDATENOTOPEN         = "date_not_open"
	EIDEMPOTENCYCONFLICT = "idempotency_conflict"
	EINSUFFICIENTCREDIT  = "insufficient_credit"
	EINSUFFICIENTSTOCK   = "insufficient_stock"
	EINTERNAL            = "internal"
	EINVALID             = "validation_failed"
	EINVALIDTRANSITION   = "invalid_transition"
	ENOTFOUND            = "not_found"
	ENOTDISCARDED        = "not_discarded"
	EOVERPAYMENT         = "overpayment"
	ERESERVEDCODE        = "reserved_code"
	EUNAUTHORIZED        = "unauthorized"
	EUNPROCESSABLE       = "unprocessable"
	// EWEBHOOKTARGETFORBIDDEN: a webhook URL whose host is, or resolves
	// to, a loopback, private, link-local or otherwise internal address
	// (SSRF), unless RIVERBANK_WEBHOOK_ALLOW_PRIVATE.
	EWEBHOOKTARGETFORBIDDEN = "webhook_target_forbidden"
	// EWEBHOOKKEYMISSING: webhook subscriptions cannot be created because
	// RIVERBANK_WEBHOOK_KEY (which encrypts their secrets) is not set.
	EWEBHOOKKEYMISSING = "webhook_key_missing"
)

// Error is a domain error: a code a client can act on and a message a human
// can read. Messages must never contain internal detail (SQL, stack traces):
// they are sent to clients verbatim.
type Error struct {
	// Code is one of the E* constants.
	Code string
	// Message is safe to show to a client.
	Message string
	// Details are optional structured facts (for example the SKU that ran
	// out of stock, or the first open business date).
	Details map[string]any
}

// Error implements the error interface.
func (e *Error) Error() string {
	return fmt.Sprintf("riverbank error: code=%s message=%s", e.Code, e.Message)
}

// Errorf returns a domain error with a formatted message.
func Errorf(code string, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WithDetail returns e with one more structured detail attached.
func (e *Error) WithDetail(key string, value any) *Error {
	if e.Details == nil {
		e.Details = map[string]any{}
	}
	e.Details[key] = value
	return e
}

// ErrorCode returns the code of the first *Error in err's chain, or EINTERNAL
// for any other non-nil error, or "" for nil.
func ErrorCode(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	default:
		return EINTERNAL
	}
}

// ErrorMessage returns the client-safe message of err: the message of the
// first *Error in its chain, or a generic text for anything else so that
// internal detail never leaks.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
