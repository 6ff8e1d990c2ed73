package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"riverbank"
	"riverbank/internal/batch"
	"riverbank/internal/cob"
	"riverbank/internal/collection"
	"riverbank/internal/events"
	"riverbank/internal/ledger"
	"riverbank/internal/lending"
	"riverbank/internal/orders"
)

func init() {
	// An event's data is the resource as this API shows it.
	events.SetRenderer(RenderResource)
	events.SetStoredRenderer(renderStored)
}

// renderStored renders an event stored as a row (schema step 10) into the
// API body of its resource.
func renderStored(kind string, data []byte) (any, error) {
	switch kind {
	case orders.StoredKind:
		o, err := orders.FromStored(data)
		if err != nil {
			return nil, err
		}
		return orderBody(o), nil
	}
	return nil, fmt.Errorf("unknown stored event kind %q", kind)
}

// RenderResource returns the API body of a domain value (the data of an
// event); values it does not know are returned as they are.
func RenderResource(v any) (any, error) {
	switch r := v.(type) {
	case *orders.Order:
		return orderBody(r), nil
	case *orders.Product:
		return productBody(r), nil
	case *ledger.Entry:
		return entryBody(r), nil
	case *lending.Loan:
		return loanBody(r), nil
	case *lending.Repayment:
		return repaymentBody(r), nil
	case *lending.CreditLine:
		return creditLineBody(r), nil
	case *collection.Case:
		return caseBody(r), nil
	case *cob.Run:
		return cobRunBody(r), nil
	case *batch.Batch:
		return batchBody(r), nil
	}
	return v, nil
}

// EventBody is one event of the feed.
type EventBody struct {
	ID          int64           `json:"id" doc:"Stable: consumers de-duplicate on it."`
	Type        string          `json:"type" example:"order.paid"`
	SubjectType string          `json:"subject_type" example:"order"`
	SubjectID   string          `json:"subject_id" example:"1042"`
	OccurredAt  time.Time       `json:"occurred_at"`
	Data        json.RawMessage `json:"data" doc:"The resource as the API returns it after the change."`
}

type listEventsInput struct {
	After     string `query:"after" maxLength:"200" doc:"Opaque cursor: next_cursor of the previous page. Omit to read from the oldest retained event."`
	Limit     int    `query:"limit" minimum:"1" maximum:"500" default:"50"`
	Type      string `query:"type" maxLength:"64" doc:"Only events of this type."`
	SubjectID string `query:"subject_id" maxLength:"200" doc:"Only events of this subject (the resource's id)."`
	Wait      string `query:"wait" maxLength:"16" doc:"Long-poll: an empty page waits up to this long for the next event (0-30s; seconds, or a duration such as 500ms)." example:"25s"`
}

type listEventsOutput struct {
	Body struct {
		Events     []EventBody `json:"events" doc:"In commit-visible order, gap-free."`
		NextCursor string      `json:"next_cursor,omitempty" doc:"Pass as after to read on (also when the page is empty)."`
	}
}

// parseWait accepts whole seconds ("25") or a Go duration ("500ms").
func parseWait(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := strconv.Atoi(s)
		if nerr != nil {
			return 0, riverbank.Errorf(riverbank.EINVALID, "wait %q is not a number of seconds or a duration", s).WithDetail("field", "wait")
		}
		// Checked before multiplying: n × 10^9 ns can wrap around int64
		// into the allowed range (found by FuzzParseWait).
		if n < 0 || n > int(events.MaxWait/time.Second) {
			return 0, riverbank.Errorf(riverbank.EINVALID, "wait must be between 0 and 30s").WithDetail("field", "wait")
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 || d > events.MaxWait {
		return 0, riverbank.Errorf(riverbank.EINVALID, "wait must be between 0 and 30s").WithDetail("field", "wait")
	}
	return d, nil
}

func (h *handlers) registerEvents(api huma.API) {
	huma.Register(api, huma.Operation{OperationID: "list-events", Method: http.MethodGet, Path: "/v1/events", Summary: "Read the events feed", Tags: []string{"Events"},
		Description: "Every state change appends one event in the transaction that makes it. Pages are in commit-visible order and gap-free: a consumer that pages " +
			"from its cursor never skips an event committed after it read past that position. With wait, an empty page long-polls until an event commits. " +
			"A cursor older than RIVERBANK_EVENT_RETENTION is 410 cursor_expired.",
		Metadata: answers(codes(riverbank.ECURSOREXPIRED), nil)}, h.listEvents)
}

func (h *handlers) listEvents(ctx context.Context, in *listEventsInput) (*listEventsOutput, error) {
	after, err := events.DecodeCursor(in.After)
	if err != nil {
		return nil, err
	}
	wait, err := parseWait(in.Wait)
	if err != nil {
		return nil, err
	}
	if in.Type != "" && !validEventType(in.Type) {
		return nil, riverbank.Errorf(riverbank.EINVALID, "type %q is not an event type", in.Type).WithDetail("field", "type").WithDetail("allowed", events.Types)
	}
	evs, next, err := h.Events.Read(ctx, events.Query{After: after, Limit: in.Limit, Type: in.Type, SubjectID: in.SubjectID, Wait: wait})
	if err != nil {
		return nil, err
	}
	out := &listEventsOutput{}
	out.Body.Events = make([]EventBody, len(evs))
	for i, e := range evs {
		out.Body.Events[i] = EventBody{ID: e.ID, Type: e.Type, SubjectType: e.SubjectType, SubjectID: e.SubjectID, OccurredAt: e.OccurredAt, Data: e.Data}
	}
	out.Body.NextCursor = next.Encode()
	return out, nil
}

func validEventType(t string) bool {
	for _, v := range events.Types {
		if v == t {
			return true
		}
	}
	return false
}
