package api

import (
	"encoding/base64"
	"strconv"
	"strings"

	"riverbank"
)

// Pagination defaults shared by every list endpoint.
const (
	DefaultLimit = 50
	MaxLimit     = 500
)

// Cursors are opaque to clients: base64 of "v1:<last key>". Keyset
// pagination on a unique, indexed key keeps every page an index range scan,
// however deep.
func encodeCursor(key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("v1:" + key))
}

func encodeIDCursor(id int64) string { return encodeCursor(strconv.FormatInt(id, 10)) }

func decodeCursor(c string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !strings.HasPrefix(string(b), "v1:") || !riverbank.ValidText(string(b)) {
		return "", riverbank.Errorf(riverbank.EINVALID, "cursor is not valid: pass next_cursor from a previous page unchanged")
	}
	return strings.TrimPrefix(string(b), "v1:"), nil
}

func decodeIDCursor(c string) (int64, error) {
	s, err := decodeCursor(c)
	if err != nil {
		return 0, err
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, riverbank.Errorf(riverbank.EINVALID, "cursor is not valid: pass next_cursor from a previous page unchanged")
	}
	return id, nil
}

// PageParams are the query parameters of every list endpoint.
type PageParams struct {
	Limit  int    `query:"limit" minimum:"1" maximum:"500" default:"50" doc:"Page size (1..500)."`
	Cursor string `query:"cursor" maxLength:"200" doc:"Opaque cursor from a previous page's next_cursor."`
}

func (p PageParams) limit() int {
	if p.Limit <= 0 {
		return DefaultLimit
	}
	return min(p.Limit, MaxLimit)
}
