package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"unicode/utf8"

	"github.com/danielgtaylor/huma/v2"

	"riverbank"
	"riverbank/internal/db"
)

// Problem is an RFC 9457 problem+json body with riverbank's machine-readable
// code. Every error the API returns, from validation to auth to domain
// rules, has this shape.
type Problem struct {
	Type     string              `json:"type" doc:"A URI reference identifying the problem type." example:"https://riverbank.dev/problems/insufficient_stock"`
	Title    string              `json:"title" doc:"Short summary of the problem type." example:"Conflict"`
	Status   int                 `json:"status" doc:"HTTP status code." example:"409"`
	Detail   string              `json:"detail,omitempty" doc:"Human-readable explanation of this occurrence." example:"not enough stock for sku A-1"`
	Instance string              `json:"instance,omitempty" doc:"URI of this occurrence."`
	Code     string              `json:"code" doc:"Machine-readable error code." example:"insufficient_stock" enum:"not_found,validation_failed,unprocessable,insufficient_stock,insufficient_credit,invalid_transition,idempotency_conflict,date_not_open,conflict,unauthorized,request_too_large,request_timeout,method_not_allowed,unsupported_media_type,not_acceptable,unavailable,database_unavailable,internal,balance_out_of_range,currency_required,reserved_code,overpayment,not_discarded,cursor_expired,webhook_target_forbidden,webhook_key_missing,cross_origin_refused"`
	Errors   []*huma.ErrorDetail `json:"errors,omitempty" doc:"Per-field validation errors."`
	Details  map[string]any      `json:"details,omitempty" doc:"Structured facts about the error, e.g. the SKU that ran out or the first open date."`
}

// Error implements error.
func (p *Problem) Error() string { return p.Detail }

// GetStatus implements huma.StatusError.
func (p *Problem) GetStatus() int { return p.Status }

// ContentType implements huma.ContentTypeFilter so errors are sent as
// application/problem+json.
func (p *Problem) ContentType(ct string) string {
	if ct == "application/json" || ct == "" {
		return "application/problem+json"
	}
	return ct
}

// codeStatus is the one map from domain error code to HTTP status.
var codeStatus = map[string]int{
	riverbank.ENOTFOUND:               http.StatusNotFound,
	riverbank.EINVALID:                http.StatusUnprocessableEntity,
	riverbank.EUNPROCESSABLE:          http.StatusUnprocessableEntity,
	riverbank.EINSUFFICIENTSTOCK:      http.StatusConflict,
	riverbank.EINSUFFICIENTCREDIT:     http.StatusConflict,
	riverbank.EINVALIDTRANSITION:      http.StatusConflict,
	riverbank.EIDEMPOTENCYCONFLICT:    http.StatusConflict,
	riverbank.EDATENOTOPEN:            http.StatusConflict,
	riverbank.ECONFLICT:               http.StatusConflict,
	riverbank.ENOTDISCARDED:           http.StatusConflict,
	riverbank.EUNAUTHORIZED:           http.StatusUnauthorized,
	riverbank.EBALANCEOUTOFRANGE:      http.StatusUnprocessableEntity,
	riverbank.ECURRENCYREQUIRED:       http.StatusConflict,
	riverbank.ECURSOREXPIRED:          http.StatusGone,
	riverbank.EOVERPAYMENT:            http.StatusUnprocessableEntity,
	riverbank.ERESERVEDCODE:           http.StatusUnprocessableEntity,
	riverbank.EWEBHOOKTARGETFORBIDDEN: http.StatusUnprocessableEntity,
	riverbank.EWEBHOOKKEYMISSING:      http.StatusServiceUnavailable,
	riverbank.EINTERNAL:               http.StatusInternalServerError,
}

// statusCode names the code of errors huma raises itself (decoding,
// validation, routing), which carry only a status.
func statusCode(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return riverbank.EINVALID
	case http.StatusUnauthorized:
		return riverbank.EUNAUTHORIZED
	case http.StatusNotFound:
		return riverbank.ENOTFOUND
	case http.StatusConflict:
		return riverbank.ECONFLICT
	case http.StatusMethodNotAllowed:
		return "method_not_allowed"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case http.StatusRequestTimeout:
		// huma's answer to a body that did not arrive in time.
		return EREQUESTTIMEOUT
	case http.StatusUnsupportedMediaType:
		return "unsupported_media_type"
	case http.StatusNotAcceptable:
		return "not_acceptable"
	case http.StatusServiceUnavailable:
		return "unavailable"
	}
	if status >= 500 {
		return riverbank.EINTERNAL
	}
	return riverbank.EINVALID
}

func problemType(code string) string { return "https://riverbank.dev/problems/" + code }

// newProblem builds a problem for a status, code and message.
func newProblem(status int, code, detail string) *Problem {
	return &Problem{Type: problemType(code), Title: http.StatusText(status), Status: status, Detail: detail, Code: code}
}

func init() {
	// A handler's error that is not already a huma.StatusError reaches
	// huma as a 500 "unexpected error occurred" carrying the error: turn
	// it into the problem its code calls for.
	huma.NewErrorWithContext = func(hctx huma.Context, status int, msg string, errs ...error) huma.StatusError {
		if status == http.StatusInternalServerError && len(errs) == 1 && errs[0] != nil && hctx != nil {
			op := ""
			if o := hctx.Operation(); o != nil {
				op = o.OperationID
			}
			return problemFrom(hctx.Context(), op, errs[0])
		}
		return huma.NewError(status, msg, errs...)
	}
	// Errors huma produces itself (malformed JSON, schema validation, body
	// too large) get the same shape and a code derived from the status.
	huma.NewError = func(status int, msg string, errs ...error) huma.StatusError {
		p := newProblem(status, statusCode(status), msg)
		if status >= 500 {
			// Never leak huma's internal messages on 5xx.
			p.Detail = "internal error"
			return p
		}
		for _, e := range errs {
			if e == nil {
				continue
			}
			var d huma.ErrorDetailer
			if errors.As(e, &d) {
				p.Errors = append(p.Errors, trimEcho(d.ErrorDetail()))
			} else {
				p.Errors = append(p.Errors, &huma.ErrorDetail{Message: e.Error()})
			}
		}
		return p
	}
}

// maxEcho bounds the input a validation error echoes back in its value.
const maxEcho = 256

// trimEcho keeps validation errors small: huma echoes the offending value,
// which for a body that is not JSON is the whole body (up to the body
// limit), and for a long string the whole string. The whole body is not
// echoed, and long strings are cut.
func trimEcho(d *huma.ErrorDetail) *huma.ErrorDetail {
	if d == nil {
		return d
	}
	out := *d
	if out.Location == "body" {
		if _, ok := out.Value.(string); ok {
			out.Value = nil
		}
	}
	if s, ok := out.Value.(string); ok && len(s) > maxEcho {
		cut := maxEcho
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		out.Value = s[:cut] + "…"
	}
	return &out
}

// loggerKey carries the API's logger in a request's context, for the error
// hook (huma builds errors outside any handler).
type loggerKey struct{}

func loggerFrom(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

// problemFrom converts an error a handler returned to a *Problem; it is
// the one place that does (see the huma.NewErrorWithContext hook in init),
// so a handler simply returns the domain's error and cannot forget the
// mapping. Domain errors keep their code and message; a database that
// cannot be reached is 503 database_unavailable; anything else is logged
// with its full text and answered with a generic 500 so internal detail
// (SQL, stack) never reaches a client.
func problemFrom(ctx context.Context, op string, err error) *Problem {
	var p *Problem
	if errors.As(err, &p) {
		return p
	}
	var de *riverbank.Error
	if errors.As(err, &de) {
		status, ok := codeStatus[de.Code]
		if !ok {
			status = http.StatusBadRequest
		}
		// A domain's 503 (a feature the operator has not configured, e.g.
		// webhook_key_missing) says what to do; only internal errors are
		// hidden.
		if status >= 500 && status != http.StatusServiceUnavailable {
			loggerFrom(ctx).ErrorContext(ctx, "request failed", "op", op, "error", err)
			return newProblem(status, de.Code, "internal error")
		}
		p := newProblem(status, de.Code, de.Message)
		p.Details = de.Details
		return p
	}
	if db.IsInvalidText(err) {
		// A safety net: domains validate text, but Postgres is the judge of
		// what a text column accepts (NUL, invalid UTF-8).
		return newProblem(http.StatusUnprocessableEntity, riverbank.EINVALID, "input contains characters that cannot be stored (NUL or invalid UTF-8)")
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		// The client went away; nothing useful to send.
		return newProblem(499, riverbank.EINTERNAL, "request cancelled")
	}
	if errors.Is(err, context.DeadlineExceeded) && errors.Is(context.Cause(ctx), errHandlerDeadline) {
		// The request ran out of its HandlerTimeout (limits.go), not the
		// database out of connections: say so, and that a retry is safe.
		loggerFrom(ctx).WarnContext(ctx, "request timed out", "op", op, "error", err)
		return newProblem(http.StatusServiceUnavailable, "unavailable", "the request did not complete in time; retry it (a create with the same key is idempotent)")
	}
	if db.IsUnavailable(err) {
		loggerFrom(ctx).WarnContext(ctx, "database unavailable", "op", op, "error", err)
		return newProblem(http.StatusServiceUnavailable, EDATABASEUNAVAILABLE, "the database is unavailable; retry later")
	}
	loggerFrom(ctx).ErrorContext(ctx, "request failed", "op", op, "error", err)
	return newProblem(http.StatusInternalServerError, riverbank.EINTERNAL, "internal error")
}

// EREQUESTTIMEOUT is the code of a 408: the request's body did not arrive
// within its time limit (Limits).
const EREQUESTTIMEOUT = "request_timeout"

// EDATABASEUNAVAILABLE is the code of a 503 answered while Postgres cannot
// be reached. It is the HTTP layer's own: no domain chooses it.
const EDATABASEUNAVAILABLE = "database_unavailable"

// writeProblem writes a problem from plain net/http handlers (auth, health).
func writeProblem(w http.ResponseWriter, p *Problem) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_ = jsonEncode(w, p)
}
