package api

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/danielgtaylor/huma/v2"

	"riverbank"
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
// one that holds U+FFFD, and would be stored as that. Domains keep their
// own checks (ValidText) for callers other than the API.
//
// Batch items are text of the request too: a batch whose items hold such
// text is refused whole, naming the item's field, as a JSON syntax error in
// an item is; items fail alone only on the rules of their endpoint.

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
				if v := scanJSONText(data); v != nil {
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
			if r := textReason(ctx.Param(p.Name)); r != "" {
				return &textViolation{Location: "path." + p.Name, Field: p.Name, Reason: r}
			}
		case "query":
			if query == nil {
				u := ctx.URL()
				query = u.Query()
			}
			for _, v := range query[p.Name] {
				if r := textReason(v); r != "" {
					return &textViolation{Location: "query." + p.Name, Field: p.Name, Reason: r}
				}
			}
		}
	}
	return nil
}

// textReason says why decoded text s breaks the rule ("" when it does not).
// Lone surrogates cannot occur in decoded Go text: encoded as UTF-8 they
// are invalid UTF-8.
func textReason(s string) string {
	switch {
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		return "contains a NUL character"
	}
	return ""
}

func writeTextViolation(ctx huma.Context, v *textViolation) {
	p := newProblem(http.StatusUnprocessableEntity, riverbank.EINVALID, v.Field+" "+v.Reason+": text must be valid UTF-8 without NUL characters or lone surrogates")
	p.Errors = []*huma.ErrorDetail{{Location: v.Location, Message: v.Reason}}
	p.Details = map[string]any{"field": v.Field}
	ctx.SetHeader("Content-Type", "application/problem+json")
	ctx.SetStatus(p.Status)
	_ = jsonEncode(ctx.BodyWriter(), p)
}

// maxScanDepth bounds the nesting the scanner follows (as deep as Go's
// JSON decoder accepts); deeper input is left to the decoder, which
// refuses it.
const maxScanDepth = 10000

// scanJSONText finds the first string (value or key) of a JSON document
// that breaks the text rule, and names its field. It reads only as much
// JSON syntax as it needs: a syntax error ends the scan without a finding
// and is left to the JSON decoder to report.
func scanJSONText(data []byte) *textViolation {
	s := &textScanner{data: data}
	s.value(0)
	return s.found
}

type textScanner struct {
	data  []byte
	pos   int
	found *textViolation
	bad   bool // a syntax error: stop
	// path is where the scan is: object keys, and array indexes (as
	// index+1, with key ""), rendered only for a violation.
	path []pathStep
}

type pathStep struct {
	key   string
	index int
}

func (s *textScanner) stop() bool { return s.found != nil || s.bad }

func (s *textScanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

func (s *textScanner) violation(reason string) {
	var b strings.Builder
	for _, p := range s.path {
		if p.key == "" {
			b.WriteString("[" + strconv.Itoa(p.index) + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(p.key)
	}
	field := b.String()
	loc := "body"
	if field != "" {
		loc += "." + field
	} else {
		field = "body"
	}
	s.found = &textViolation{Location: loc, Field: field, Reason: reason}
}

func (s *textScanner) value(depth int) {
	if depth > maxScanDepth {
		s.bad = true
		return
	}
	s.ws()
	if s.pos >= len(s.data) {
		s.bad = true
		return
	}
	switch s.data[s.pos] {
	case '{':
		s.pos++
		s.ws()
		if s.pos < len(s.data) && s.data[s.pos] == '}' {
			s.pos++
			return
		}
		for !s.stop() {
			s.ws()
			if s.pos >= len(s.data) || s.data[s.pos] != '"' {
				s.bad = true
				return
			}
			key, reason := s.str()
			if s.stop() {
				return
			}
			if reason != "" {
				s.violation("has a key that " + reason)
				return
			}
			s.ws()
			if s.pos >= len(s.data) || s.data[s.pos] != ':' {
				s.bad = true
				return
			}
			s.pos++
			s.path = append(s.path, pathStep{key: key})
			s.value(depth + 1)
			if s.stop() {
				return
			}
			s.path = s.path[:len(s.path)-1]
			s.ws()
			if s.pos < len(s.data) && s.data[s.pos] == ',' {
				s.pos++
				continue
			}
			if s.pos < len(s.data) && s.data[s.pos] == '}' {
				s.pos++
				return
			}
			s.bad = true
		}
	case '[':
		s.pos++
		s.ws()
		if s.pos < len(s.data) && s.data[s.pos] == ']' {
			s.pos++
			return
		}
		for i := 0; !s.stop(); i++ {
			s.path = append(s.path, pathStep{index: i})
			s.value(depth + 1)
			if s.stop() {
				return
			}
			s.path = s.path[:len(s.path)-1]
			s.ws()
			if s.pos < len(s.data) && s.data[s.pos] == ',' {
				s.pos++
				continue
			}
			if s.pos < len(s.data) && s.data[s.pos] == ']' {
				s.pos++
				return
			}
			s.bad = true
		}
	case '"':
		if _, reason := s.str(); reason != "" && !s.bad {
			s.violation(reason)
		}
	default:
		// A number or a literal: skip to the next delimiter.
		for s.pos < len(s.data) {
			switch s.data[s.pos] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return
			}
			s.pos++
		}
	}
}

// str reads a JSON string at s.pos (its opening quote) and returns its
// decoded value, when valid, and why it breaks the text rule, if it does.
func (s *textScanner) str() (string, string) {
	s.pos++ // the opening quote
	var b strings.Builder
	reason := ""
	note := func(r string) {
		if reason == "" {
			reason = r
		}
	}
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			return b.String(), reason
		case c == '\\':
			if s.pos+1 >= len(s.data) {
				s.bad = true
				return "", ""
			}
			e := s.data[s.pos+1]
			if e != 'u' {
				b.WriteByte(e)
				s.pos += 2
				continue
			}
			r, ok := s.hex4(s.pos + 2)
			if !ok {
				s.bad = true
				return "", ""
			}
			s.pos += 6
			switch {
			case r == 0:
				note("contains a NUL character")
			case utf16.IsSurrogate(r) && r < 0xdc00:
				// A high surrogate must be followed by a low one.
				if s.pos+1 < len(s.data) && s.data[s.pos] == '\\' && s.data[s.pos+1] == 'u' {
					if lo, ok := s.hex4(s.pos + 2); ok && lo >= 0xdc00 && lo <= 0xdfff {
						s.pos += 6
						b.WriteRune(utf16.DecodeRune(r, lo))
						continue
					}
				}
				note("contains a lone UTF-16 surrogate")
			case utf16.IsSurrogate(r):
				note("contains a lone UTF-16 surrogate")
			default:
				b.WriteRune(r)
			}
		case c < 0x80:
			b.WriteByte(c)
			s.pos++
		default:
			r, size := utf8.DecodeRune(s.data[s.pos:])
			if r == utf8.RuneError && size <= 1 {
				note("is not valid UTF-8")
				s.pos++
				continue
			}
			b.WriteRune(r)
			s.pos += size
		}
	}
	s.bad = true
	return "", ""
}

func (s *textScanner) hex4(at int) (rune, bool) {
	if at+4 > len(s.data) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(s.data[at:at+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	return rune(n), true
}
