// Package jsontext enforces the API's text rule on raw JSON: every string
// (value or key, at any depth) must be valid UTF-8 (RFC 8259 §8.1), must
// not hold a lone UTF-16 surrogate escape such as "\ud800" (RFC 7493
// §2.1), and must not hold NUL (Postgres text cannot store it).
//
// It reads the raw bytes, before any JSON decoding, because Go's decoder
// silently turns invalid UTF-8 and lone surrogates into U+FFFD: after
// decoding, a name sent as invalid bytes is indistinguishable from one that
// holds U+FFFD, and would be stored as that. The API checks every request
// body with it (api/text.go), and the batch service every submitted item
// (internal/batch), so an item breaking the rule fails as its single
// endpoint's request would.
package jsontext

import (
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Violation is a string that breaks the text rule.
type Violation struct {
	// Path names where the string is, as the API's problems name fields:
	// "items[0].sku", "postings[1].account"; for a key that breaks the
	// rule, the object holding it. It is "" for the document itself (a
	// top-level string, or a key of the top-level object).
	Path string
	// Reason says why: "is not valid UTF-8", "contains a NUL character",
	// "contains a lone UTF-16 surrogate", or "has a key that …".
	Reason string
}

// Field is the details.field the API names for a body violation: Path, or
// "body" for the document itself.
func (v *Violation) Field() string {
	if v.Path == "" {
		return "body"
	}
	return v.Path
}

// Detail is the problem detail the API answers for v (see Detail).
func (v *Violation) Detail() string { return Detail(v.Field(), v.Reason) }

// Detail is how the API words a text-rule violation of field (a body
// field, or a path or query parameter) in its 422's detail.
func Detail(field, reason string) string {
	return field + " " + reason + ": text must be valid UTF-8 without NUL characters or lone surrogates"
}

// Reason says why decoded text s breaks the rule ("" when it does not).
// Lone surrogates cannot occur in decoded Go text: encoded as UTF-8 they
// are invalid UTF-8.
func Reason(s string) string {
	switch {
	case !utf8.ValidString(s):
		return "is not valid UTF-8"
	case strings.IndexByte(s, 0) >= 0:
		return "contains a NUL character"
	}
	return ""
}

// MaxDepth bounds the nesting the scanner follows (as deep as Go's JSON
// decoder accepts); deeper input is left to the decoder, which refuses it.
const MaxDepth = 10000

// Scan finds the first string (value or key) of a JSON document that
// breaks the text rule, and names its field; nil when there is none. It
// reads only as much JSON syntax as it needs: a syntax error ends the scan
// without a finding and is left to the JSON decoder to report.
func Scan(data []byte) *Violation {
	return ScanExcept(data, "")
}

// ScanExcept is Scan, except that when the document is an object, the
// elements of the array under its key items are not checked, only read
// past: each of them is checked on its own by whoever takes it (a batch's
// items, internal/batch), so that one failing does not refuse the
// document. Everything else — other fields, the key items itself, a value
// of items that is not an array — is checked as Scan checks it. An empty
// items is Scan.
func ScanExcept(data []byte, items string) *Violation {
	s := &scanner{data: data, items: items}
	s.value(0)
	return s.found
}

type scanner struct {
	data  []byte
	pos   int
	found *Violation
	bad   bool // a syntax error: stop
	// items is ScanExcept's key ("" for none); quiet > 0 while the scan
	// is inside one of its elements, where violations are not recorded.
	items string
	quiet int
	// path is where the scan is: object keys, and array indexes (with key
	// ""), rendered only for a violation.
	path []step
}

type step struct {
	key   string
	index int
}

func (s *scanner) stop() bool { return s.found != nil || s.bad }

func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

func (s *scanner) violation(reason string) {
	if s.quiet > 0 {
		return
	}
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
	s.found = &Violation{Path: b.String(), Reason: reason}
}

func (s *scanner) value(depth int) {
	if depth > MaxDepth {
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
			// Keys are decoded for the path, which only a recorded
			// violation needs.
			key, reason := s.str(s.quiet == 0)
			if s.stop() {
				return
			}
			if reason != "" {
				s.violation("has a key that " + reason)
				if s.stop() {
					return
				}
			}
			s.ws()
			if s.pos >= len(s.data) || s.data[s.pos] != ':' {
				s.bad = true
				return
			}
			s.pos++
			s.path = append(s.path, step{key: key})
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
		// The elements of the top-level object's items array are read
		// past, not checked.
		opaque := s.items != "" && depth == 1 && len(s.path) == 1 && s.path[0].key == s.items
		if opaque {
			s.quiet++
			defer func() { s.quiet-- }()
		}
		for i := 0; !s.stop(); i++ {
			s.path = append(s.path, step{index: i})
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
		if _, reason := s.str(false); reason != "" && !s.bad {
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
// decoded value (when keep is set and the string is valid) and why it
// breaks the text rule, if it does.
func (s *scanner) str(keep bool) (string, string) {
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
				if keep {
					b.WriteByte(e)
				}
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
						if keep {
							b.WriteRune(utf16.DecodeRune(r, lo))
						}
						continue
					}
				}
				note("contains a lone UTF-16 surrogate")
			case utf16.IsSurrogate(r):
				note("contains a lone UTF-16 surrogate")
			default:
				if keep {
					b.WriteRune(r)
				}
			}
		case c < 0x80:
			if keep {
				b.WriteByte(c)
			}
			s.pos++
		default:
			r, size := utf8.DecodeRune(s.data[s.pos:])
			if r == utf8.RuneError && size <= 1 {
				note("is not valid UTF-8")
				s.pos++
				continue
			}
			if keep {
				b.Write(s.data[s.pos : s.pos+size])
			}
			s.pos += size
		}
	}
	s.bad = true
	return "", ""
}

func (s *scanner) hex4(at int) (rune, bool) {
	if at+4 > len(s.data) {
		return 0, false
	}
	n, err := strconv.ParseUint(string(s.data[at:at+4]), 16, 32)
	if err != nil {
		return 0, false
	}
	return rune(n), true
}
