package api_test

// Fuzz targets for the request decoding of the hottest write operations
// (SPEC §10 "Bad input"): the raw JSON body of POST /v1/orders,
// /v1/journal-entries, /v1/loans, /v1/loans/{id}/repayments and
// /v1/batches goes through the real huma API (riverbank's config, every
// operation registered, called as humatest does) on a database of the
// target's own. Properties:
//
//   - never a 5xx;
//   - an error is problem+json with a code, and shows no internal text
//     (SQL, Go errors, stacks) that the input did not itself contain;
//   - a 2xx only for a body that satisfies the documented constraints:
//     the operation's schema in the OpenAPI document (checked by
//     docSchema, independently of huma's validator) and the rules its
//     description and SPEC state (sums, dates, modes);
//   - a created resource shows what was sent (a decoder that let one field
//     overwrite another, e.g. by a case-insensitive key match, would not).
//
// `go test` runs the seeds (testdata/fuzz/<Target> plus f.Add); `make fuzz`
// runs each target for FUZZTIME.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/stretchr/testify/require"

	"riverbank/api"
	"riverbank/internal/ledger"
	"riverbank/internal/lending"
	"riverbank/internal/orders"
	"riverbank/internal/testkit"
)

// fuzzOp is one operation under fuzzing.
type fuzzOp struct {
	k      *testkit.Bundle
	api    huma.API
	method string
	path   string // as requested
	schema *docSchema
	body   map[string]any // the request body schema
	// rules checks the documented constraints beyond the schema on a body
	// the schema accepts.
	rules func(body map[string]any) error
	// echo checks a created resource (201/202) against the request.
	echo func(t *testing.T, req, resp map[string]any)
}

func newFuzzOp(f *testing.F, method, path, docPath string) *fuzzOp {
	f.Helper()
	return newFuzzOpOn(f, testkit.DB(f, testkit.DBOptions{MaxConns: 4}), method, path, docPath)
}

// newFuzzOpOn builds the API on k (riverbank's huma config, every
// operation) and reads the operation's body schema from its OpenAPI
// document, the one /openapi.json serves.
func newFuzzOpOn(f *testing.F, k *testkit.Bundle, method, path, docPath string) *fuzzOp {
	f.Helper()
	mux := http.NewServeMux()
	a := api.NewAPI(mux)
	api.Register(a, &api.Services{Services: k.Services, River: k.Inserter})
	doc, err := json.Marshal(a.OpenAPI())
	require.NoError(f, err)
	schema, err := newDocSchema(doc)
	require.NoError(f, err)
	body, err := schema.requestSchema(method, docPath)
	require.NoError(f, err)
	return &fuzzOp{k: k, api: a, method: method, path: path, schema: schema, body: body}
}

// leakMarkers are internal texts that must never reach a client.
var leakMarkers = []string{"SQLSTATE", "pgx", "pgconn", "riverbank error", "goroutine", ".go:", "panic", "runtime error", "unexpected error occurred"}

func (o *fuzzOp) run(t *testing.T, body []byte) {
	// What humatest's Do does, without its request and response dumps
	// (pretty-printing 10,000 nested brackets costs seconds per input).
	req := httptest.NewRequest(o.method, o.path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	o.api.Adapter().ServeHTTP(rec, req)
	out := rec.Body.String()
	require.Less(t, rec.Code, 500, "a 5xx for body %q: %s", body, out)
	for _, m := range leakMarkers {
		if strings.Contains(out, m) && !strings.Contains(strings.ToLower(string(body)), strings.ToLower(m)) {
			t.Fatalf("internal text %q in the answer to %q: %s", m, body, out)
		}
	}
	if rec.Code >= 300 {
		require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"), out)
		var p api.Problem
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &p), out)
		require.Equal(t, rec.Code, p.Status, out)
		require.NotEmpty(t, p.Code, out)
		return
	}
	// A 2xx: the body must satisfy the documented constraints.
	v, ok := decodeJSON(body)
	require.True(t, ok, "%d for a body that is not one JSON value: %q", rec.Code, body)
	require.NoError(t, o.schema.check(o.body, v, "body"), "%d for a body outside the schema: %q", rec.Code, body)
	sent, ok := v.(map[string]any)
	require.True(t, ok)
	if o.rules != nil {
		require.NoError(t, o.rules(sent), "%d for a body that breaks a documented rule: %q", rec.Code, body)
	}
	if (rec.Code == http.StatusCreated || rec.Code == http.StatusAccepted) && o.echo != nil {
		resp, ok := decodeJSON(rec.Body.Bytes())
		require.True(t, ok, out)
		o.echo(t, sent, resp.(map[string]any))
	}
}

// sameJSON compares two decoded JSON values, numbers by value.
func sameJSON(a, b any) bool {
	na, aNum := a.(json.Number)
	nb, bNum := b.(json.Number)
	if aNum && bNum {
		fa, ok1 := new(big.Float).SetString(na.String())
		fb, ok2 := new(big.Float).SetString(nb.String())
		return ok1 && ok2 && fa.Cmp(fb) == 0
	}
	return jsonEqual(a, b)
}

func requireEcho(t *testing.T, req, resp map[string]any, fields ...string) {
	t.Helper()
	for _, f := range fields {
		if v, ok := req[f]; ok {
			require.True(t, sameJSON(v, resp[f]), "%s: sent %v, stored %v", f, v, resp[f])
		}
	}
}

func bigInt(v any) (*big.Int, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return nil, false
	}
	f, ok := new(big.Float).SetString(n.String())
	if !ok || !f.IsInt() {
		return nil, false
	}
	i, _ := f.Int(nil)
	return i, true
}

func date(v any) (time.Time, bool) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, false
	}
	d, err := time.Parse(lending.DateLayout, s)
	return d, err == nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// addSeeds adds bodies, and a few classic mutations of the first one.
func addSeeds(f *testing.F, bodies ...[]byte) {
	for _, b := range bodies {
		f.Add(b)
	}
	first := bodies[0]
	for _, m := range [][]byte{
		nil, []byte(``), []byte(`null`), []byte(`[]`), []byte(`{}`), []byte(`"x"`), []byte(`{"`),
		append(append([]byte{}, first...), " trailing"...),
		bytes.Repeat([]byte(`[`), 10000),
		[]byte(strings.Replace(string(first), `"`, `"\u0000`, 1)),
		[]byte(strings.Replace(string(first), `"`, "\"\xff\xfe", 1)),
	} {
		f.Add(m)
	}
}

func FuzzCreateJournalEntry(f *testing.F) {
	o := newFuzzOp(f, http.MethodPost, "/v1/journal-entries", "/v1/journal-entries")
	for code, typ := range map[string]string{"cash:fz": "ASSET", "rev:fz": "INCOME"} {
		_, _, err := o.k.Services.Ledger.CreateAccount(o.k.Ctx, ledger.AccountInput{Code: code, Name: code, Type: typ, Currency: "EUR"})
		require.NoError(f, err)
	}
	o.rules = func(b map[string]any) error {
		postings, _ := b["postings"].([]any)
		sum := new(big.Int)
		for i, p := range postings {
			amt, ok := bigInt(p.(map[string]any)["amount_minor"])
			if !ok || amt.Sign() == 0 || amt.CmpAbs(big.NewInt(ledger.MaxAmountMinor)) > 0 {
				return fmt.Errorf("postings[%d].amount_minor %v: not a non-zero amount within ±%d", i, amt, int64(ledger.MaxAmountMinor))
			}
			sum.Add(sum, amt)
		}
		if sum.Sign() != 0 {
			return fmt.Errorf("postings sum to %v, not 0", sum)
		}
		return nil
	}
	o.echo = func(t *testing.T, req, resp map[string]any) {
		requireEcho(t, req, resp, "idempotency_key", "description", "urgent")
		sent, _ := req["postings"].([]any)
		got, _ := resp["postings"].([]any)
		require.Len(t, got, len(sent))
		for i := range sent {
			requireEcho(t, sent[i].(map[string]any), got[i].(map[string]any), "account", "amount_minor")
		}
	}
	addSeeds(f,
		[]byte(`{"idempotency_key":"je-1","description":"sale","postings":[{"account":"cash:fz","amount_minor":100},{"account":"rev:fz","amount_minor":-100}]}`),
		[]byte(`{"idempotency_key":"je-2","currency":"EUR","urgent":true,"postings":[{"account":"cash:fz","amount_minor":1000000000000000},{"account":"rev:fz","amount_minor":-1000000000000000}]}`),
		[]byte(`{"idempotency_key":"je-3","postings":[{"account":"cash:fz","amount_minor":9223372036854775807},{"account":"cash:fz","amount_minor":1},{"account":"rev:fz","amount_minor":-9223372036854775808}]}`),
		[]byte(`{"idempotency_key":"je-4","postings":[{"account":"cash:fz","amount_minor":1e2},{"account":"rev:fz","amount_minor":-100.0}]}`),
		[]byte(`{"idempotency_key":"je-6","postings":[{"account":"cash:fz","amount_minor":5},{"account":"rev:fz","amount_minor":-5}],"postings":[]}`),
	)
	f.Fuzz(func(t *testing.T, body []byte) { o.run(t, body) })
}

func FuzzCreateOrder(f *testing.F) {
	o := newFuzzOp(f, http.MethodPost, "/v1/orders", "/v1/orders")
	for _, sku := range []string{"SKU-FZ", "SKU-B"} {
		_, _, err := o.k.Services.Orders.PutProduct(o.k.Ctx, orders.ProductInput{SKU: sku, Name: sku, PriceMinor: 250, Currency: "EUR", Stock: orders.MaxStock})
		require.NoError(f, err)
	}
	o.rules = func(b map[string]any) error {
		seen := map[string]bool{}
		items, _ := b["items"].([]any)
		for i, it := range items {
			sku, _ := it.(map[string]any)["sku"].(string)
			if seen[sku] {
				return fmt.Errorf("items[%d] repeats sku %s", i, sku)
			}
			seen[sku] = true
		}
		return nil
	}
	o.echo = func(t *testing.T, req, resp map[string]any) {
		requireEcho(t, req, resp, "buyer_id", "merchant_id", "identifier")
		sent, _ := req["items"].([]any)
		got, _ := resp["items"].([]any)
		require.Len(t, got, len(sent))
	}
	addSeeds(f,
		[]byte(`{"buyer_id":"buyer-1","merchant_id":"m-1","identifier":"cart-1","items":[{"sku":"SKU-FZ","quantity":2}]}`),
		[]byte(`{"buyer_id":"b2","merchant_id":"m-1","identifier":"cart-2","items":[{"sku":"SKU-FZ","quantity":1},{"sku":"SKU-B","quantity":1000000}]}`),
		[]byte(`{"buyer_id":"b3","merchant_id":"m-1","identifier":"cart-3","items":[{"sku":"SKU-FZ","quantity":1},{"sku":"SKU-FZ","quantity":1}]}`),
		[]byte(`{"buyer_id":"b4","Buyer_ID":"../../etc","merchant_id":"m-1","identifier":"cart-4","items":[{"sku":"SKU-FZ","quantity":1}]}`),
		[]byte(`{"buyer_id":"b5","merchant_id":"M-UPPER","identifier":"cart-5","items":[{"sku":"NOPE","quantity":1}]}`),
	)
	f.Fuzz(func(t *testing.T, body []byte) { o.run(t, body) })
}

// loanRules are the documented rules of POST /v1/loans beyond its schema.
func loanRules(b map[string]any) error {
	start, ok1 := date(b["start_date"])
	due, ok2 := date(b["due_date"])
	if !ok1 || !ok2 || !due.After(start) {
		return fmt.Errorf("due_date %v must be a date after start_date %v", b["due_date"], b["start_date"])
	}
	share, hasShare := bigInt(b["manufacturer_share_bps"])
	if !hasShare {
		share = new(big.Int)
	}
	mfr, _ := b["manufacturer_id"].(string)
	switch b["interest_mode"] {
	case lending.ModeSplit:
		if share.Cmp(big.NewInt(1)) < 0 || share.Cmp(big.NewInt(9999)) > 0 || mfr == "" {
			return fmt.Errorf("SPLIT needs manufacturer_share_bps 1..9999 and a manufacturer_id")
		}
	case lending.ModeManufacturer:
		if share.Sign() != 0 || mfr == "" {
			return fmt.Errorf("MANUFACTURER needs a manufacturer_id and no share")
		}
	default:
		if share.Sign() != 0 {
			return fmt.Errorf("manufacturer_share_bps is for SPLIT only")
		}
	}
	return nil
}

func FuzzCreateLoan(f *testing.F) {
	o := newFuzzOp(f, http.MethodPost, "/v1/loans", "/v1/loans")
	_, _, err := o.k.Services.Lending.PutCreditLine(o.k.Ctx, lending.CreditLineInput{BorrowerID: "dealer-fz", LimitMinor: lending.MaxAmountMinor, Currency: "EUR"})
	require.NoError(f, err)
	o.rules = loanRules
	o.echo = func(t *testing.T, req, resp map[string]any) {
		requireEcho(t, req, resp, "loan_no", "borrower_id", "currency", "principal_minor", "annual_rate_bps", "penalty_rate_bps",
			"late_fee_minor", "start_date", "due_date", "interest_mode", "dealer_id")
	}
	addSeeds(f,
		[]byte(`{"loan_no":"L-1","borrower_id":"dealer-fz","currency":"EUR","principal_minor":100000,"annual_rate_bps":1200,"penalty_rate_bps":500,"late_fee_minor":1000,"start_date":"2026-01-05","due_date":"2026-07-05","interest_mode":"DEALER","dealer_id":"dealer-fz"}`),
		[]byte(`{"loan_no":"L-2","borrower_id":"dealer-fz","currency":"EUR","principal_minor":1,"annual_rate_bps":0,"penalty_rate_bps":0,"late_fee_minor":0,"start_date":"2026-02-28","due_date":"2026-03-01","interest_mode":"SPLIT","dealer_id":"dealer-fz","manufacturer_id":"mfr-1","manufacturer_share_bps":2500}`),
		[]byte(`{"loan_no":"L-3","borrower_id":"dealer-fz","currency":"EUR","principal_minor":5,"annual_rate_bps":1,"penalty_rate_bps":1,"late_fee_minor":0,"start_date":"2026-02-29","due_date":"2026-03-31","interest_mode":"MANUFACTURER","dealer_id":"dealer-fz","manufacturer_id":"mfr-1"}`),
		[]byte(`{"loan_no":"L-4","borrower_id":"dealer-fz","currency":"EUR","principal_minor":5,"annual_rate_bps":1,"penalty_rate_bps":1,"late_fee_minor":0,"start_date":"0001-01-01","due_date":"9999-12-31","interest_mode":"DEALER","dealer_id":"dealer-fz"}`),
		[]byte(`{"loan_no":"L-5","borrower_id":"dealer-fz","currency":"USD","principal_minor":5,"annual_rate_bps":1,"penalty_rate_bps":1,"late_fee_minor":0,"start_date":"2026-01-01","due_date":"2026-01-01","interest_mode":"DEALER","dealer_id":"dealer-fz","manufacturer_share_bps":1}`),
	)
	f.Fuzz(func(t *testing.T, body []byte) { o.run(t, body) })
}

func FuzzCreateRepayment(f *testing.F) {
	// The loan comes first: its id is in the path.
	k := testkit.DB(f, testkit.DBOptions{MaxConns: 4})
	_, _, err := k.Services.Lending.PutCreditLine(k.Ctx, lending.CreditLineInput{BorrowerID: "dealer-fz", LimitMinor: lending.MaxAmountMinor, Currency: "EUR"})
	require.NoError(f, err)
	loan, _, err := k.Services.Lending.CreateLoan(k.Ctx, lending.LoanInput{LoanNo: "L-fz", BorrowerID: "dealer-fz", Currency: "EUR", PrincipalMinor: lending.MaxAmountMinor,
		AnnualRateBps: 1000, PenaltyRateBps: 500, StartDate: "2020-01-01", DueDate: "2040-01-01", InterestMode: lending.ModeSplit, DealerID: "dealer-fz",
		ManufacturerID: "mfr-1", ManufacturerShareBps: 5000})
	require.NoError(f, err)
	o := newFuzzOpOn(f, k, http.MethodPost, fmt.Sprintf("/v1/loans/%d/repayments", loan.ID), "/v1/loans/{id}/repayments")
	start, _ := time.Parse(lending.DateLayout, "2020-01-01")
	o.rules = func(b map[string]any) error {
		if v, ok := b["value_date"]; ok {
			d, ok := date(v)
			if !ok || d.Before(start) || d.After(time.Now().UTC()) {
				return fmt.Errorf("value_date %v must be between the loan's start and today", v)
			}
		}
		return nil
	}
	o.echo = func(t *testing.T, req, resp map[string]any) {
		requireEcho(t, req, resp, "identifier", "payer", "amount_minor", "value_date")
		alloc, _ := resp["allocation"].(map[string]any)
		sum := new(big.Int)
		for _, k := range []string{"penalty_minor", "late_fee_minor", "interest_minor", "principal_minor"} {
			v, ok := bigInt(alloc[k])
			require.True(t, ok, "allocation.%s", k)
			require.GreaterOrEqual(t, v.Sign(), 0, "allocation.%s", k)
			sum.Add(sum, v)
		}
		amt, _ := bigInt(req["amount_minor"])
		require.Zero(t, sum.Cmp(amt), "the allocation sums to the amount")
	}
	addSeeds(f,
		[]byte(`{"identifier":"tx-1","payer":"DEALER","amount_minor":100}`),
		[]byte(`{"identifier":"tx-2","payer":"DEALER","amount_minor":5,"value_date":"2024-02-29"}`),
		[]byte(`{"identifier":"tx-3","payer":"MANUFACTURER","amount_minor":1}`),
		[]byte(`{"identifier":"tx-4","payer":"DEALER","amount_minor":1,"value_date":"2019-12-31"}`),
		[]byte(`{"identifier":"tx-5","payer":"DEALER","amount_minor":1,"value_date":"2999-01-01"}`),
		[]byte(`{"identifier":"tx-6","payer":"dealer","amount_minor":-1,"value_date":"2024-13-01"}`),
	)
	f.Fuzz(func(t *testing.T, body []byte) { o.run(t, body) })
}

func FuzzCreateBatch(f *testing.F) {
	o := newFuzzOp(f, http.MethodPost, "/v1/batches", "/v1/batches")
	o.rules = func(b map[string]any) error {
		items, _ := b["items"].([]any)
		for i, it := range items {
			if _, ok := it.(map[string]any); !ok {
				return fmt.Errorf("items[%d] is not a JSON object", i)
			}
		}
		return nil
	}
	o.echo = func(t *testing.T, req, resp map[string]any) {
		requireEcho(t, req, resp, "idempotency_key", "operation")
		items, _ := req["items"].([]any)
		require.True(t, sameJSON(json.Number(fmt.Sprint(len(items))), resp["total"]), "total %v for %d items", resp["total"], len(items))
	}
	entry := `{"idempotency_key":"je-1","postings":[{"account":"cash:fz","amount_minor":1},{"account":"rev:fz","amount_minor":-1}]}`
	addSeeds(f,
		[]byte(`{"idempotency_key":"b-1","operation":"journal_entry","items":[`+entry+`]}`),
		[]byte(`{"idempotency_key":"b-2","operation":"order","items":[{"buyer_id":"b","merchant_id":"m","identifier":"c","items":[{"sku":"S","quantity":1}]},{}]}`),
		[]byte(`{"idempotency_key":"b-3","operation":"repayment","items":[{"loan_id":1,"identifier":"t","payer":"DEALER","amount_minor":1}]}`),
		[]byte(`{"idempotency_key":"b-4","operation":"loan","items":[1,"x",null,[]]}`),
		[]byte(`{"idempotency_key":"b-5","operation":"transfer","items":[{}]}`),
		mustJSON(map[string]any{"idempotency_key": "b-6", "operation": "journal_entry", "items": []any{}}),
	)
	f.Fuzz(func(t *testing.T, body []byte) { o.run(t, body) })
}
