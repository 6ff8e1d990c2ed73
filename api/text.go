package api

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"riverbank"
	"riverbank/internal/jsontext"
)

// The text rule, the same for every string the API reads (every body field,
// at any depth, and every path and query parameter of every operation):
// text must be valid UTF-8 (RFC 8259 §8.1), must not hold a lone UTF-16
// surrogate escape such as "\ud800" (RFC 7493 §2.1), and must not hold NUL
// (Postgres text cannot store it). Anything else is 422 validation_failed
// naming the field, and nothing is written.
//
// It is checked on the raw request, before JSON decoding, because Go's
// decoder silently turns invalid UTF-8 and lone surrogates into U+FFFD:
// after decoding, a name sent as invalid bytes is indistinguishable from
// one that holds U+FFFD, and would be stored as that. The scanner is
// internal/jsontext, shared with internal/batch. Domains keep their own
// checks (ValidText) for callers other than the API.
//
// Batch items are the one exception (an operation names the array in its
// metadata, textItemsKey): POST /v1/batches checks its envelope here
// (idempotency_key, operation, the items array itself), and each item as
// the item's own request, when the batch is created (internal/batch). An
// item whose text breaks the rule fails alone — FAILED with
// validation_failed and the detail its single endpoint's 422 would give,
// fields named relative to the item — and the other items run. A JSON
// syntax error anywhere, items included, still refuses the whole body (it
// is not JSON).

// textViolation is a string that breaks the text rule.
type textViolation struct {
	// Location is where, as huma names locations: "body.items[0].sku",
	// "query.buyer_id", "path.sku".
	Location string
	// Field is the location without its "body." / "query." / "path."
	// prefix: the details.field of the problem.
	Field  string
	Reason string
}

// textRule is the huma middleware that enforces the text rule on an
// operation's parameters and JSON body.
func textRule(api huma.API) func(ctx huma.Context, next func(huma.Context)) {
	return func(ctx huma.Context, next func(huma.Context)) {
		op := ctx.Operation()
		if op == nil {
			next(ctx)
			return
		}
		if v := checkParams(ctx, op); v != nil {
			writeTextViolation(ctx, v)
			return
		}
		if op.RequestBody == nil {
			next(ctx)
			return
		}
		// Read what huma would read (it refuses more than MaxBodyBytes with
		// 413 itself), keep it for huma, and scan it when it is JSON.
		body := ctx.BodyReader()
		if body == nil {
			next(ctx)
			return
		}
		limit := op.MaxBodyBytes
		if limit <= 0 {
			limit = MaxBodyBytes
		}
		// The body read gets the operation's body deadline (see
		// readBodyFirst): a body sent too slowly is a read error huma
		// answers 408. Once the body is in, the deadline is lifted: net/http
		// keeps reading the connection in the background to notice a client
		// that goes away, and a deadline left armed there would fire while
		// a slow handler still runs, cancel its context and take the
		// keep-alive connection with it.
		timeout, _ := op.Metadata[bodyReadTimeoutKey].(time.Duration)
		if timeout <= 0 {
			timeout = defaultBodyReadTimeout
		}
		_ = ctx.SetReadDeadline(time.Now().Add(timeout))
		data, err := io.ReadAll(io.LimitReader(body, limit+1))
		rest := io.MultiReader(bytes.NewReader(data), errReader{err}, body)
		if err == nil && int64(len(data)) <= limit {
			_ = ctx.SetReadDeadline(time.Time{})
			if isJSONContentType(ctx.Header("Content-Type")) {
				items, _ := op.Metadata[textItemsKey].(string)
				if v := scanJSONText(data, items); v != nil {
					writeTextViolation(ctx, v)
					return
				}
			}
		}
		next(bodyContext{innerContext: ctx, body: rest})
	}
}

// defaultBodyReadTimeout is huma's default body deadline, which every
// operation with a body has unless it sets its own.
const defaultBodyReadTimeout = 5 * time.Second

// bodyReadTimeoutKey is the operation metadata under which readBodyFirst
// keeps an operation's body deadline for the text rule.
const bodyReadTimeoutKey = "riverbank.bodyReadTimeout"

// readBodyFirst is the OnAddOperation hook that hands an operation's body
// deadline from huma to the text rule, which reads every body before huma
// does. huma would otherwise arm its deadline again when it reads the body
// the text rule already holds, and leave it armed while the handler runs
// (see textRule for why that cancels slow handlers); with BodyReadTimeout
// zero, huma leaves the connection's deadline alone.
func readBodyFirst(_ *huma.OpenAPI, op *huma.Operation) {
	if op.RequestBody == nil {
		return
	}
	if op.Metadata == nil {
		op.Metadata = map[string]any{}
	}
	timeout := op.BodyReadTimeout
	if timeout <= 0 {
		timeout = defaultBodyReadTimeout
	}
	op.Metadata[bodyReadTimeoutKey] = timeout
	op.BodyReadTimeout = 0
}

// errReader returns err (when set) once the data read before it is
// consumed, so huma sees a read error where the scan met it.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	return 0, io.EOF
}

// bodyContext hands huma the body the text rule has already read.
type bodyContext struct {
	innerContext
	body io.Reader
}

// innerContext is huma.Context under a name that can be embedded (a field
// named Context would hide the method Context).
type innerContext huma.Context

func (c bodyContext) BodyReader() io.Reader { return c.body }

// isJSONContentType mirrors huma's choice of format: no Content-Type, or
// one whose media type (or +suffix) is json, is decoded as JSON; any other
// is 415, which the text rule leaves to huma.
func isJSONContentType(ct string) bool {
	if ct == "" {
		return true
	}
	start := strings.IndexByte(ct, '+') + 1
	end := strings.IndexByte(ct, ';')
	if end == -1 {
		end = len(ct)
	}
	if end < start {
		return false
	}
	switch strings.TrimSpace(ct[start:end]) {
	case "", "application/json", "json":
		return true
	}
	return false
}

func checkParams(ctx huma.Context, op *huma.Operation) *textViolation {
	var query map[string][]string
	for _, p := range op.Parameters {
		switch p.In {
		case "path":
			if r := jsontext.Reason(ctx.Param(p.Name)); r != "" {
				return &textViolation{Location: "path." + p.Name, Field: p.Name, Reason: r}
			}
		case "query":
			if query == nil {
				u := ctx.URL()
				query = u.Query()
			}
			for _, v := range query[p.Name] {
				if r := jsontext.Reason(v); r != "" {
					return &textViolation{Location: "query." + p.Name, Field: p.Name, Reason: r}
				}
			}
		}
	}
	return nil
}

func writeTextViolation(ctx huma.Context, v *textViolation) {
	p := newProblem(http.StatusUnprocessableEntity, riverbank.EINVALID, jsontext.Detail(v.Field, v.Reason))
	p.Errors = []*huma.ErrorDetail{{Location: v.Location, Message: v.Reason}}
	p.Details = map[string]any{"field": v.Field}
	ctx.SetHeader("Content-Type", "application/problem+json")
	ctx.SetStatus(p.Status)
	_ = jsonEncode(ctx.BodyWriter(), p)
}

// textItemsKey is the operation metadata under which an operation names
// the top-level array of its body whose elements the text rule leaves to
// the handler (POST /v1/batches: "items", each item checked on its own by
// internal/batch).
const textItemsKey = "riverbank.textItems"

// scanJSONText finds the first string (value or key) of a JSON body that
// breaks the text rule, except in the elements of the array under the top-level
// key items ("" for none), and names its field (jsontext.ScanExcept).
func scanJSONText(data []byte, items string) *textViolation {
	v := jsontext.ScanExcept(data, items)
	if v == nil {
		return nil
	}
	loc := "body"
	if v.Path != "" {
		loc += "." + v.Path
	}
	return &textViolation{Location: loc, Field: v.Field(), Reason: v.Reason}
}
