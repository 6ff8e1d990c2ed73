package api

import (
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"riverbank"
)

// The OpenAPI document states every status an operation can answer, so a
// client generated from it parses every answer: its success statuses (201
// and the 200 of an idempotent replay or an update, 202 and the 200 of an
// existing run or batch) and one response per error status, each with the
// problem+json schema and, in its description and in the x-problem-codes
// extension, the `code` values it can carry. Operations declare only what
// is theirs (opDoc, in huma.Operation.Metadata); documentOperation, a huma
// OnAddOperation hook installed by NewAPI, adds what every operation
// shares, the same way for all of them. The contract test in
// openapi_contract_test.go answers every operation with hostile input and
// checks each answer against this document.

// ProblemCodesExtension is the OpenAPI extension on every error response
// that lists the `code` values a problem of that status can carry for that
// operation.
const ProblemCodesExtension = "x-problem-codes"

// opDoc is what an operation declares about its answers beyond what huma
// derives from its input and output types.
type opDoc struct {
	// Codes are the domain error codes the operation can answer besides
	// those every operation shares (see documentOperation); their statuses
	// come from codeStatus.
	Codes []string
	// Also are the other success statuses the operation answers with the
	// body of its DefaultStatus, with their descriptions: the 200 of an
	// idempotent replay of a create, or of an update.
	Also map[int]string
}

const opDocKey = "riverbank.opDoc"

// answers puts an operation's opDoc in its huma.Operation.Metadata.
func answers(codes []string, also map[int]string) map[string]any {
	return map[string]any{opDocKey: opDoc{Codes: codes, Also: also}}
}

// codes lists an operation's own error codes (for answers).
func codes(c ...string) []string { return c }

// replayOK is the Also of a create whose repeat with the same idempotency
// key and payload answers 200 with the original resource.
func replayOK(what string) map[int]string {
	return map[int]string{http.StatusOK: "A repeat of the same request (same idempotency key, same payload): " + what + ". Nothing is written."}
}

// codeDocs says what each error code means, whatever the operation.
var codeDocs = map[string]string{
	riverbank.EUNAUTHORIZED:           "The Authorization header is missing, or is not `Bearer <token>` with a token of RIVERBANK_API_TOKENS.",
	riverbank.ENOTFOUND:               "The resource in the path, or one the request names, does not exist.",
	riverbank.EUNPROCESSABLE:          "The request is well formed but names something that cannot be used (an unknown sku or account, an amount that differs from the total); `details` names it.",
	riverbank.EINSUFFICIENTSTOCK:      "A line asks for more units than are available; `details` names the sku. Nothing is reserved.",
	riverbank.EINSUFFICIENTCREDIT:     "The borrower's credit line is missing, frozen, or has less available than the principal.",
	riverbank.EINVALIDTRANSITION:      "The resource's status does not allow this transition.",
	riverbank.EIDEMPOTENCYCONFLICT:    "The idempotency key was already used for a different request.",
	riverbank.EDATENOTOPEN:            "The business date is not open (already closed, or an earlier date is still open); `details.first_open_date` names the first open date.",
	riverbank.ECONFLICT:               "The request conflicts with the resource's current state; `detail` says how.",
	riverbank.ENOTDISCARDED:           "The job is not discarded (for instance a concurrent retry has just re-queued it); `details.state` names its state.",
	riverbank.ECURRENCYREQUIRED:       "The account code exists in several currencies: name one (`details.currencies`).",
	riverbank.ECURSOREXPIRED:          "The cursor points before the oldest retained event (RIVERBANK_EVENT_RETENTION): read again without `after`.",
	riverbank.EOVERPAYMENT:            "The amount is more than the payer owes.",
	riverbank.ERESERVEDCODE:           "The account code is reserved for the accounts riverbank creates itself.",
	riverbank.EBALANCEOUTOFRANGE:      "The entry would take an account's balance past ±10^18 minor units.",
	riverbank.EWEBHOOKTARGETFORBIDDEN: "The URL's host is, or resolves to, a loopback, private, link-local or other internal address (allowed only with RIVERBANK_WEBHOOK_ALLOW_PRIVATE).",
	riverbank.EWEBHOOKKEYMISSING:      "The server has no RIVERBANK_WEBHOOK_KEY, which encrypts subscription secrets: the operator must set it.",
	codeRequestTooLarge:               "The body is larger than 1 MiB (16 MiB for POST /v1/batches). Checked on every request before routing, on its declared Content-Length and while it is read. Nothing is written.",
	codeUnsupportedMediaType:          "The body's Content-Type is not JSON (application/json, or a +json type). Nothing is written.",
	EDATABASEUNAVAILABLE:              "Postgres cannot be reached. Nothing was written; retry later.",
	riverbank.EINTERNAL:               "An unexpected error: logged by the server with its detail; the body says only `internal error`. Retrying with the same idempotency key is safe.",
}

// validationDocs is validation_failed by status: 400 for a body that is
// not JSON at all, 422 for one (or a parameter) that breaks the schema or
// a rule.
var validationDocs = map[int]string{
	http.StatusBadRequest: "The body is missing, or is not JSON. Nothing is written.",
	http.StatusUnprocessableEntity: "A parameter or a body field breaks the schema or a rule of the operation: `errors[].location` (e.g. `body.items[0].sku`, `query.limit`) or `details.field` names it. " +
		"Text in every field and parameter must be valid UTF-8 without NUL characters or lone UTF-16 surrogate escapes (such as `\\ud800`). Nothing is written.",
}

// Codes of statuses the HTTP layer answers itself (statusCode).
const (
	codeRequestTooLarge      = "request_too_large"
	codeUnsupportedMediaType = "unsupported_media_type"
)

func init() {
	// Body field names are matched exactly as documented: huma would
	// otherwise take "NAME" for "name" (and Go's decoder would too), which
	// the document does not say.
	huma.ValidateStrictCasing = true
}

// documentLeniency makes the document say what the server accepts besides
// its types: an optional body field sent as null is taken as absent (huma
// skips it), so its schema admits null; an optional query parameter sent
// empty (?status=) is taken as absent, so it allows an empty value.
func documentLeniency(oapi *huma.OpenAPI, op *huma.Operation) {
	for _, p := range op.Parameters {
		if p.In == "query" && !p.Required {
			p.AllowEmptyValue = true
		}
	}
	if op.RequestBody == nil {
		return
	}
	seen := map[*huma.Schema]bool{}
	var walk func(s *huma.Schema)
	walk = func(s *huma.Schema) {
		for s != nil && s.Ref != "" {
			s = oapi.Components.Schemas.SchemaFromRef(s.Ref)
		}
		if s == nil || seen[s] {
			return
		}
		seen[s] = true
		required := map[string]bool{}
		for _, r := range s.Required {
			required[r] = true
		}
		for name, ps := range s.Properties {
			switch ps.Type {
			case huma.TypeString, huma.TypeInteger, huma.TypeNumber, huma.TypeBoolean:
				if !required[name] {
					ps.Nullable = true
				}
			}
			walk(ps)
		}
		walk(s.Items)
	}
	for _, mt := range op.RequestBody.Content {
		walk(mt.Schema)
	}
}

// documentOperation is the huma OnAddOperation hook that gives every /v1
// operation its complete list of answers: the Also statuses of its opDoc
// with the body of its DefaultStatus, and one problem+json response per
// error status, built from the codes every operation shares
//
//   - 401 unauthorized, 413 request_too_large, 500 internal and 503
//     database_unavailable, on every operation (auth and the body limit run
//     before routing; every operation reads Postgres);
//   - 422 validation_failed on operations with parameters or a body, and
//     400 validation_failed and 415 unsupported_media_type on operations
//     with a body;
//
// plus the opDoc's own codes. Operations must not list huma Errors (it
// would document statuses without their codes): the hook panics at start.
func documentOperation(oapi *huma.OpenAPI, op *huma.Operation) {
	if !strings.HasPrefix(op.Path, "/v1/") {
		return
	}
	if len(op.Errors) > 0 {
		panic(fmt.Sprintf("api: operation %s lists huma Errors; declare its error codes with answers(...) instead", op.OperationID))
	}
	d, _ := op.Metadata[opDocKey].(opDoc)
	documentLeniency(oapi, op)

	success := op.Responses[strconv.Itoa(op.DefaultStatus)]
	for status, desc := range d.Also {
		if success == nil {
			panic(fmt.Sprintf("api: operation %s has no %d response to repeat for %d", op.OperationID, op.DefaultStatus, status))
		}
		op.Responses[strconv.Itoa(status)] = &huma.Response{Description: desc, Headers: success.Headers, Content: success.Content}
	}

	byStatus := map[int][]string{}
	add := func(status int, code string) {
		if !slices.Contains(byStatus[status], code) {
			byStatus[status] = append(byStatus[status], code)
		}
	}
	add(http.StatusUnauthorized, riverbank.EUNAUTHORIZED)
	add(http.StatusRequestEntityTooLarge, codeRequestTooLarge)
	add(http.StatusInternalServerError, riverbank.EINTERNAL)
	add(http.StatusServiceUnavailable, EDATABASEUNAVAILABLE)
	if len(op.Parameters) > 0 || op.RequestBody != nil {
		add(http.StatusUnprocessableEntity, riverbank.EINVALID)
	}
	if op.RequestBody != nil {
		add(http.StatusBadRequest, riverbank.EINVALID)
		add(http.StatusUnsupportedMediaType, codeUnsupportedMediaType)
	}
	for _, code := range d.Codes {
		status, ok := codeStatus[code]
		if !ok || codeDocs[code] == "" && code != riverbank.EINVALID {
			panic(fmt.Sprintf("api: operation %s declares code %q, which has no status in codeStatus or no entry in codeDocs", op.OperationID, code))
		}
		add(status, code)
	}

	problem := oapi.Components.Schemas.Schema(reflect.TypeFor[Problem](), true, "Problem")
	for k := range op.Responses {
		if n, err := strconv.Atoi(k); err != nil || n >= 400 {
			delete(op.Responses, k) // huma's "default" and error responses
		}
	}
	for status, cs := range byStatus {
		slices.Sort(cs)
		var b strings.Builder
		b.WriteString(http.StatusText(status))
		b.WriteString(": a problem whose `code` is")
		if len(cs) > 1 {
			b.WriteString(" one of")
		}
		b.WriteString("\n")
		for _, c := range cs {
			text := codeDocs[c]
			if c == riverbank.EINVALID {
				text = validationDocs[status]
			}
			fmt.Fprintf(&b, "\n- `%s`: %s", c, text)
		}
		op.Responses[strconv.Itoa(status)] = &huma.Response{
			Description: b.String(),
			Content:     map[string]*huma.MediaType{"application/problem+json": {Schema: problem}},
			Extensions:  map[string]any{ProblemCodesExtension: cs},
		}
	}
}
