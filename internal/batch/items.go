package batch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/ledger"
	"riverbank/internal/lending"
	"riverbank/internal/orders"
)

// The item types mirror the request bodies of the single endpoints
// (api/ledger.go, api/orders.go, api/lending.go): the same fields, unknown
// fields refused as the API refuses them. Fields the API requires although
// zero is a valid value are pointers, so a missing one fails as it would
// there; every other rule is the domain's own Validate, run by the domain
// function itself.

type entryItem struct {
	IdempotencyKey string `json:"idempotency_key"`
	Description    string `json:"description"`
	Urgent         bool   `json:"urgent"`
	Currency       string `json:"currency"`
	Postings       []struct {
		Account     string `json:"account"`
		AmountMinor int64  `json:"amount_minor"`
	} `json:"postings"`
}

type orderItem struct {
	BuyerID    string `json:"buyer_id"`
	MerchantID string `json:"merchant_id"`
	Identifier string `json:"identifier"`
	Items      []struct {
		SKU      string `json:"sku"`
		Quantity int64  `json:"quantity"`
	} `json:"items"`
}

type loanItem struct {
	LoanNo               string `json:"loan_no"`
	BorrowerID           string `json:"borrower_id"`
	Currency             string `json:"currency"`
	PrincipalMinor       int64  `json:"principal_minor"`
	AnnualRateBps        *int64 `json:"annual_rate_bps"`
	PenaltyRateBps       *int64 `json:"penalty_rate_bps"`
	LateFeeMinor         *int64 `json:"late_fee_minor"`
	StartDate            string `json:"start_date"`
	DueDate              string `json:"due_date"`
	InterestMode         string `json:"interest_mode"`
	DealerID             string `json:"dealer_id"`
	ManufacturerID       string `json:"manufacturer_id"`
	ManufacturerShareBps int64  `json:"manufacturer_share_bps"`
}

type repaymentItem struct {
	LoanID      *int64 `json:"loan_id"`
	Identifier  string `json:"identifier"`
	Payer       string `json:"payer"`
	AmountMinor int64  `json:"amount_minor"`
	ValueDate   string `json:"value_date"`
}

// decodeItem decodes an item strictly into v; what the API's schema
// validation would refuse is validation_failed.
func decodeItem(payload []byte, v any) error {
	if key, ok := inexactKey(payload, reflect.TypeOf(v)); ok {
		return invalid("unexpected property %q", key).WithDetail("field", key)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, extra := dec.Token(); !errors.Is(extra, io.EOF) {
			err = errors.New("trailing data")
		}
	}
	if err == nil {
		return nil
	}
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &typeErr) && typeErr.Field != "":
		return invalid("%s must be %s", typeErr.Field, jsonKind(typeErr.Type.Kind().String())).WithDetail("field", typeErr.Field)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return invalid("unexpected property %q", field).WithDetail("field", field)
	}
	return invalid("the item is not a valid request body")
}

// inexactKey returns the first object key of payload (at any depth) that
// is not exactly a JSON field name of t. encoding/json matches names
// case-insensitively, the API's schema validation does not
// (api/input.go): {"IDEMPOTENCY_KEY": ...} is refused there, so it is
// here. A payload that is not JSON is left to the decoder.
func inexactKey(payload []byte, t reflect.Type) (string, bool) {
	var v any
	if json.Unmarshal(payload, &v) != nil {
		return "", false
	}
	return inexactKeyIn(v, t)
}

func inexactKeyIn(v any, t reflect.Type) (string, bool) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch x := v.(type) {
	case map[string]any:
		if t.Kind() != reflect.Struct {
			return "", false
		}
		for key, val := range x {
			f, ok := fieldByJSONName(t, key)
			if !ok {
				return key, true
			}
			if k, bad := inexactKeyIn(val, f.Type); bad {
				return key + "." + k, true
			}
		}
	case []any:
		if t.Kind() != reflect.Slice {
			return "", false
		}
		for _, e := range x {
			if k, bad := inexactKeyIn(e, t.Elem()); bad {
				return k, true
			}
		}
	}
	return "", false
}

func fieldByJSONName(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if tag, _, _ := strings.Cut(f.Tag.Get("json"), ","); tag == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func jsonKind(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"):
		return "an integer"
	case goKind == "string":
		return "a string"
	case goKind == "bool":
		return "a boolean"
	case goKind == "slice":
		return "an array"
	case goKind == "struct", goKind == "ptr":
		return "an object"
	}
	return "of another type"
}

func required(field string) error {
	return invalid("%s is required", field).WithDetail("field", field)
}

// runItem does one item through its single endpoint's domain function on
// d (services on the claiming transaction) and returns the id of what it
// created or found: the journal entry, order, loan or repayment.
func runItem(ctx context.Context, d Domains, op string, payload []byte) (int64, error) {
	switch op {
	case OpJournalEntry:
		var it entryItem
		if err := decodeItem(payload, &it); err != nil {
			return 0, err
		}
		in := ledger.EntryInput{IdempotencyKey: it.IdempotencyKey, Description: it.Description, Urgent: it.Urgent, Currency: it.Currency}
		for _, p := range it.Postings {
			in.Postings = append(in.Postings, ledger.PostingInput{Account: p.Account, AmountMinor: p.AmountMinor})
		}
		e, _, err := d.Ledger.Post(ctx, in)
		if err != nil {
			return 0, err
		}
		return e.ID, nil
	case OpOrder:
		var it orderItem
		if err := decodeItem(payload, &it); err != nil {
			return 0, err
		}
		in := orders.CreateInput{BuyerID: it.BuyerID, MerchantID: it.MerchantID, Identifier: it.Identifier, Items: make([]orders.ItemInput, len(it.Items))}
		for i, l := range it.Items {
			in.Items[i] = orders.ItemInput{SKU: l.SKU, Quantity: l.Quantity}
		}
		o, _, err := d.Orders.Create(ctx, in)
		if err != nil {
			return 0, err
		}
		return o.ID, nil
	case OpLoan:
		var it loanItem
		if err := decodeItem(payload, &it); err != nil {
			return 0, err
		}
		for _, f := range []struct {
			name string
			v    *int64
		}{{"annual_rate_bps", it.AnnualRateBps}, {"penalty_rate_bps", it.PenaltyRateBps}, {"late_fee_minor", it.LateFeeMinor}} {
			if f.v == nil {
				return 0, required(f.name)
			}
		}
		l, _, err := d.Lending.CreateLoan(ctx, lending.LoanInput{
			LoanNo: it.LoanNo, BorrowerID: it.BorrowerID, Currency: it.Currency, PrincipalMinor: it.PrincipalMinor,
			AnnualRateBps: *it.AnnualRateBps, PenaltyRateBps: *it.PenaltyRateBps, LateFeeMinor: *it.LateFeeMinor,
			StartDate: it.StartDate, DueDate: it.DueDate, InterestMode: it.InterestMode, DealerID: it.DealerID,
			ManufacturerID: it.ManufacturerID, ManufacturerShareBps: it.ManufacturerShareBps,
		})
		if err != nil {
			return 0, err
		}
		return l.ID, nil
	case OpRepayment:
		var it repaymentItem
		if err := decodeItem(payload, &it); err != nil {
			return 0, err
		}
		if it.LoanID == nil {
			return 0, required("loan_id")
		}
		if *it.LoanID < 1 {
			// The single endpoint's path parameter has minimum 1.
			return 0, invalid("loan_id must be at least 1").WithDetail("field", "loan_id")
		}
		r, _, err := d.Lending.Repay(ctx, lending.RepaymentInput{LoanID: *it.LoanID, Identifier: it.Identifier, Payer: it.Payer, AmountMinor: it.AmountMinor, ValueDate: it.ValueDate})
		if err != nil {
			return 0, err
		}
		return r.ID, nil
	}
	return 0, fmt.Errorf("unknown batch operation %q", op)
}

// clientError returns the code and message an item's error is recorded
// with when it is the item's own fault, as the API would answer it: a
// domain error keeps its code and message; text Postgres cannot store is
// validation_failed (api/errors.go maps it so). ok is false for internal
// errors.
func clientError(err error) (code, detail string, ok bool) {
	var de *riverbank.Error
	if errors.As(err, &de) && de.Code != riverbank.EINTERNAL {
		return de.Code, de.Message, true
	}
	if db.IsInvalidText(err) {
		return riverbank.EINVALID, "input contains characters that cannot be stored (NUL or invalid UTF-8)", true
	}
	return "", "", false
}
