package api_test

import (
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/humatest"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivertest"
	"github.com/stretchr/testify/require"

	"riverbank/api"
	"riverbank/internal/lending"
	"riverbank/internal/testkit"
)

// lendingAPIBundle is the API on a transaction of the package's shared test
// database, rolled back when the test ends (testkit.Tx); each request runs
// in a savepoint of it, so a test can count rows before and after a request.
type lendingAPIBundle struct {
	*testkit.Bundle
	api humatest.TestAPI
}

func setupLendingAPI(t *testing.T) *lendingAPIBundle {
	t.Helper()
	k := testkit.Tx(t)
	return &lendingAPIBundle{Bundle: k, api: k.API(t)}
}

func (b *lendingAPIBundle) putLine(t *testing.T, borrower string, limit int64, currency string, frozen bool) api.CreditLineBody {
	t.Helper()
	rec := b.api.Put("/v1/credit-lines/"+borrower, map[string]any{"limit_minor": limit, "currency": currency, "frozen": frozen})
	require.Contains(t, []int{http.StatusCreated, http.StatusOK}, rec.Code, rec.Body.String())
	return testkit.DecodeJSON[api.CreditLineBody](t, rec)
}

// lendingLoanRequest is a valid DEALER loan in CNY, dated in the past so
// repayments can be value-dated between its start and today.
func lendingLoanRequest(borrower, loanNo string, principal int64) map[string]any {
	return map[string]any{"loan_no": loanNo, "borrower_id": borrower, "currency": "CNY", "principal_minor": principal,
		"annual_rate_bps": 1200, "penalty_rate_bps": 1800, "late_fee_minor": 500, "start_date": "2026-01-05",
		"due_date": "2026-07-05", "interest_mode": "DEALER", "dealer_id": borrower}
}

func (b *lendingAPIBundle) createLoan(t *testing.T, body map[string]any) api.LoanBody {
	t.Helper()
	rec := b.api.Post("/v1/loans", body)
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	return testkit.DecodeJSON[api.LoanBody](t, rec)
}

// lendingWrites counts every row a lending request may write, and the
// credit taken.
type lendingWrites struct {
	Lines, Loans, Repayments, Restorations, Entries, Postings, Accounts, Jobs, Used int64
}

func (b *lendingAPIBundle) writes(t *testing.T) lendingWrites {
	t.Helper()
	var w lendingWrites
	require.NoError(t, b.DB.QueryRow(b.Ctx, `SELECT (SELECT count(*) FROM credit_line), (SELECT count(*) FROM loan),
		(SELECT count(*) FROM repayment), (SELECT count(*) FROM credit_restoration), (SELECT count(*) FROM ledger_entry),
		(SELECT count(*) FROM ledger_posting), (SELECT count(*) FROM ledger_account), (SELECT count(*) FROM river_job),
		(SELECT coalesce(sum(used_minor), 0)::bigint FROM credit_line)`).
		Scan(&w.Lines, &w.Loans, &w.Repayments, &w.Restorations, &w.Entries, &w.Postings, &w.Accounts, &w.Jobs, &w.Used))
	return w
}

func lendingWith(body map[string]any, kv ...any) map[string]any {
	out := maps.Clone(body)
	for i := 0; i < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func lendingWithout(body map[string]any, key string) map[string]any {
	out := maps.Clone(body)
	delete(out, key)
	return out
}

func TestLendingAPICreditLine(t *testing.T) {
	t.Parallel()
	b := setupLendingAPI(t)
	borrower := b.ID("dealer")
	path := "/v1/credit-lines/" + borrower

	rec := b.api.Put(path, map[string]any{"limit_minor": 10_000, "currency": "CNY"})
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	c := testkit.DecodeJSON[api.CreditLineBody](t, rec)
	require.Equal(t, api.CreditLineBody{BorrowerID: borrower, Currency: "CNY", LimitMinor: 10_000, AvailableMinor: 10_000,
		CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}, c)
	for _, f := range []string{`"limit_minor":10000`, `"used_minor":0`, `"available_minor":10000`, `"frozen":false`, `"currency":"CNY"`} {
		require.Contains(t, rec.Body.String(), f)
	}

	b.createLoan(t, lendingLoanRequest(borrower, b.ID("L1"), 4_000))
	rec = b.api.Put(path, map[string]any{"limit_minor": 20_000, "currency": "CNY", "frozen": true})
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	c = testkit.DecodeJSON[api.CreditLineBody](t, rec)
	require.EqualValues(t, 20_000, c.LimitMinor)
	require.EqualValues(t, 4_000, c.UsedMinor)
	require.EqualValues(t, 16_000, c.AvailableMinor)
	require.True(t, c.Frozen)

	rec = b.api.Get(path)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	got := testkit.DecodeJSON[api.CreditLineBody](t, rec)
	require.Equal(t, c.LimitMinor, got.LimitMinor)
	require.Equal(t, c.UsedMinor, got.UsedMinor)
	require.True(t, got.Frozen)

	// Lowered below what is used: nothing available, nothing clawed back.
	c = b.putLine(t, borrower, 3_000, "CNY", false)
	require.EqualValues(t, 4_000, c.UsedMinor)
	require.Zero(t, c.AvailableMinor)

	testkit.RequireProblem(t, b.api.Get("/v1/credit-lines/"+b.ID("nobody")), "not_found", http.StatusNotFound)

	before := b.writes(t)
	prob := testkit.RequireProblem(t, b.api.Put(path, map[string]any{"limit_minor": 10_000, "currency": "USD"}), "conflict", http.StatusConflict)
	require.Equal(t, "CNY", prob.Details["currency"])
	require.Equal(t, before, b.writes(t))

	valid := map[string]any{"limit_minor": 100, "currency": "CNY"}
	for name, tc := range map[string]struct {
		path string
		body any
	}{
		"NegativeLimit":    {"/v1/credit-lines/" + b.ID("x"), lendingWith(valid, "limit_minor", -1)},
		"LimitOverMax":     {"/v1/credit-lines/" + b.ID("x"), lendingWith(valid, "limit_minor", lending.MaxAmountMinor+1)},
		"LimitAsString":    {"/v1/credit-lines/" + b.ID("x"), lendingWith(valid, "limit_minor", "100")},
		"FractionalLimit":  {"/v1/credit-lines/" + b.ID("x"), lendingWith(valid, "limit_minor", 1.5)},
		"MissingLimit":     {"/v1/credit-lines/" + b.ID("x"), lendingWithout(valid, "limit_minor")},
		"MissingCurrency":  {"/v1/credit-lines/" + b.ID("x"), lendingWithout(valid, "currency")},
		"LowerCurrency":    {"/v1/credit-lines/" + b.ID("x"), lendingWith(valid, "currency", "cny")},
		"FrozenAsString":   {"/v1/credit-lines/" + b.ID("x"), lendingWith(valid, "frozen", "yes")},
		"UnknownField":     {"/v1/credit-lines/" + b.ID("x"), lendingWith(valid, "used_minor", 5)},
		"BadBorrower":      {"/v1/credit-lines/-dealer", valid},
		"BorrowerTooLong":  {"/v1/credit-lines/" + strings.Repeat("d", 65), valid},
		"BorrowerWithPlus": {"/v1/credit-lines/a+b", valid},
	} {
		rec := b.api.Put(tc.path, tc.body)
		t.Logf("%s → %d", name, rec.Code)
		testkit.RequireProblem(t, rec, "validation_failed", http.StatusUnprocessableEntity)
		require.Equal(t, before, b.writes(t), name)
	}
	rec = b.api.Put("/v1/credit-lines/"+b.ID("x"), "Content-Type: application/json", strings.NewReader(`{"limit_minor": 1,`))
	testkit.RequireProblem(t, rec, "validation_failed", http.StatusBadRequest, http.StatusUnprocessableEntity)
	require.Equal(t, before, b.writes(t))
}

func TestLendingAPICreateLoan(t *testing.T) {
	t.Parallel()
	b := setupLendingAPI(t)
	borrower := b.ID("dealer")
	b.putLine(t, borrower, 10_000, "CNY", false)
	req := lendingWith(lendingLoanRequest(borrower, b.ID("L-1"), 6_000), "interest_mode", "SPLIT", "manufacturer_id", "maker-1", "manufacturer_share_bps", 2500)

	rec := b.api.Post("/v1/loans", req)
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	l := testkit.DecodeJSON[api.LoanBody](t, rec)
	require.Equal(t, "ACTIVE", l.Status)
	require.Equal(t, req["loan_no"], l.LoanNo)
	require.Equal(t, "SPLIT", l.InterestMode)
	require.Equal(t, "maker-1", *l.ManufacturerID)
	require.EqualValues(t, 2500, l.ManufacturerShareBps)
	require.EqualValues(t, 6_000, l.PrincipalOutstandingMinor)
	require.Equal(t, "2026-01-05", l.StartDate)
	require.Equal(t, "2026-07-05", l.DueDate)
	require.NotZero(t, l.DisbursementEntryID)
	for _, f := range []string{"status", "principal_outstanding_minor", "interest_outstanding_dealer_minor", "interest_outstanding_manufacturer_minor",
		"penalty_outstanding_minor", "late_fee_outstanding_minor", "days_past_due", "case_id", "last_closed_date"} {
		require.Contains(t, rec.Body.String(), `"`+f+`":`)
	}
	require.Contains(t, rec.Body.String(), `"last_closed_date":null`)
	require.EqualValues(t, 4_000, b.putLine(t, borrower, 10_000, "CNY", false).AvailableMinor)

	// The same request: 200 with the loan, no credit taken again.
	before := b.writes(t)
	rec = b.api.Post("/v1/loans", req)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, l.ID, testkit.DecodeJSON[api.LoanBody](t, rec).ID)
	require.Equal(t, before, b.writes(t))

	// Another request with the loan_no: 409.
	prob := testkit.RequireProblem(t, b.api.Post("/v1/loans", lendingWith(req, "principal_minor", 6_001)), "idempotency_conflict", http.StatusConflict)
	require.EqualValues(t, l.ID, prob.Details["loan_id"])
	require.Equal(t, before, b.writes(t))
}

func TestLendingAPICreateLoanBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	b := setupLendingAPI(t)
	borrower, frozen := b.ID("dealer"), b.ID("frozen")
	b.putLine(t, borrower, 10_000, "CNY", false)
	b.putLine(t, frozen, 10_000, "CNY", true)
	ok := lendingLoanRequest(borrower, b.ID("L-bad"), 1_000)
	split := lendingWith(ok, "interest_mode", "SPLIT", "manufacturer_id", "maker-1")

	tests := []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"LoanNoEmpty", lendingWith(ok, "loan_no", ""), 422, "validation_failed"},
		{"LoanNoMissing", lendingWithout(ok, "loan_no"), 422, "validation_failed"},
		{"LoanNoWithSpace", lendingWith(ok, "loan_no", "L 1"), 422, "validation_failed"},
		{"LoanNoStartsWithDash", lendingWith(ok, "loan_no", "-L1"), 422, "validation_failed"},
		{"LoanNoTooLong", lendingWith(ok, "loan_no", strings.Repeat("L", 65)), 422, "validation_failed"},
		{"BorrowerInvalid", lendingWith(ok, "borrower_id", "a b"), 422, "validation_failed"},
		{"CurrencyNotISO", lendingWith(ok, "currency", "cny"), 422, "validation_failed"},
		{"PrincipalZero", lendingWith(ok, "principal_minor", 0), 422, "validation_failed"},
		{"PrincipalNegative", lendingWith(ok, "principal_minor", -1), 422, "validation_failed"},
		{"PrincipalOverMax", lendingWith(ok, "principal_minor", lending.MaxAmountMinor+1), 422, "validation_failed"},
		{"PrincipalFractional", lendingWith(ok, "principal_minor", 10.5), 422, "validation_failed"},
		{"PrincipalAsString", lendingWith(ok, "principal_minor", "1000"), 422, "validation_failed"},
		{"PrincipalMissing", lendingWithout(ok, "principal_minor"), 422, "validation_failed"},
		{"AnnualRateNegative", lendingWith(ok, "annual_rate_bps", -1), 422, "validation_failed"},
		{"AnnualRateOverMax", lendingWith(ok, "annual_rate_bps", lending.MaxRateBps+1), 422, "validation_failed"},
		{"PenaltyRateNegative", lendingWith(ok, "penalty_rate_bps", -1), 422, "validation_failed"},
		{"PenaltyRateOverMax", lendingWith(ok, "penalty_rate_bps", lending.MaxRateBps+1), 422, "validation_failed"},
		{"LateFeeNegative", lendingWith(ok, "late_fee_minor", -1), 422, "validation_failed"},
		{"DealerMissing", lendingWithout(ok, "dealer_id"), 422, "validation_failed"},
		{"StartDateMalformed", lendingWith(ok, "start_date", "2026-1-5"), 422, "validation_failed"},
		{"DueDateNotADay", lendingWith(ok, "due_date", "2026-02-30"), 422, "validation_failed"},
		{"DueDateOnStartDate", lendingWith(ok, "due_date", "2026-01-05"), 422, "validation_failed"},
		{"DueDateBeforeStartDate", lendingWith(ok, "due_date", "2025-12-31"), 422, "validation_failed"},
		{"InterestModeUnknown", lendingWith(ok, "interest_mode", "BOTH"), 422, "validation_failed"},
		{"InterestModeMissing", lendingWithout(ok, "interest_mode"), 422, "validation_failed"},
		{"SplitShareZero", lendingWith(split, "manufacturer_share_bps", 0), 422, "validation_failed"},
		{"SplitShareMissing", split, 422, "validation_failed"},
		{"SplitShareAll", lendingWith(split, "manufacturer_share_bps", 10_000), 422, "validation_failed"},
		{"ShareOnlyForSplitNotDealer", lendingWith(ok, "manufacturer_share_bps", 2500), 422, "validation_failed"},
		{"ShareOnlyForSplitNotManufacturer", lendingWith(ok, "interest_mode", "MANUFACTURER", "manufacturer_id", "maker-1", "manufacturer_share_bps", 2500), 422, "validation_failed"},
		{"ManufacturerModeNeedsManufacturer", lendingWith(ok, "interest_mode", "MANUFACTURER"), 422, "validation_failed"},
		{"SplitModeNeedsManufacturer", lendingWith(ok, "interest_mode", "SPLIT", "manufacturer_share_bps", 2500), 422, "validation_failed"},
		{"UnknownField", lendingWith(ok, "discount_bps", 5), 422, "validation_failed"},
		{"CurrencyNotTheLines", lendingWith(ok, "currency", "USD"), 422, "validation_failed"},
		{"NoCreditLine", lendingWith(ok, "borrower_id", b.ID("nobody")), 409, "insufficient_credit"},
		{"LineTooShort", lendingWith(ok, "principal_minor", 10_001), 409, "insufficient_credit"},
		{"LineFrozen", lendingWith(ok, "borrower_id", frozen), 409, "insufficient_credit"},
	}
	before := b.writes(t)
	for _, tt := range tests {
		rec := b.api.Post("/v1/loans", tt.body)
		t.Logf("%s → %d", tt.name, rec.Code)
		testkit.RequireProblem(t, rec, tt.code, tt.status)
		require.Equal(t, before, b.writes(t), tt.name)
	}
	rec := b.api.Post("/v1/loans", "Content-Type: application/json", strings.NewReader(`{"loan_no": "x",`))
	testkit.RequireProblem(t, rec, "validation_failed", http.StatusBadRequest, http.StatusUnprocessableEntity)
	require.Equal(t, before, b.writes(t))

	// The refusals explain themselves.
	prob := testkit.RequireProblem(t, b.api.Post("/v1/loans", lendingWith(ok, "principal_minor", 10_001)), "insufficient_credit", http.StatusConflict)
	require.EqualValues(t, 10_000, prob.Details["available_minor"])
	prob = testkit.RequireProblem(t, b.api.Post("/v1/loans", lendingWith(ok, "borrower_id", frozen)), "insufficient_credit", http.StatusConflict)
	require.Equal(t, "frozen", prob.Details["reason"])
	prob = testkit.RequireProblem(t, b.api.Post("/v1/loans", lendingWith(ok, "currency", "USD")), "validation_failed", http.StatusUnprocessableEntity)
	require.Equal(t, "CNY", prob.Details["credit_line_currency"])
	require.Equal(t, before, b.writes(t))
}

func TestLendingAPIGetAndListLoans(t *testing.T) {
	t.Parallel()
	b := setupLendingAPI(t)
	borrower, other := b.ID("dealer"), b.ID("other")
	b.putLine(t, borrower, 100_000, "CNY", false)
	b.putLine(t, other, 100_000, "CNY", false)
	var ids []int64
	for i := range 5 {
		ids = append(ids, b.createLoan(t, lendingLoanRequest(borrower, b.ID(fmt.Sprintf("A%d", i)), 100)).ID)
	}
	b.createLoan(t, lendingLoanRequest(other, b.ID("B0"), 100))
	rec := b.api.Post(fmt.Sprintf("/v1/loans/%d/repayments", ids[1]), map[string]any{"identifier": "all", "payer": "DEALER", "amount_minor": 100, "value_date": "2026-02-01"})
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())

	rec = b.api.Get(fmt.Sprintf("/v1/loans/%d", ids[1]))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	l := testkit.DecodeJSON[api.LoanBody](t, rec)
	require.Equal(t, "REPAID", l.Status)
	require.NotNil(t, l.RepaidAt)
	require.Zero(t, l.PrincipalOutstandingMinor)

	testkit.RequireProblem(t, b.api.Get("/v1/loans/999999999999"), "not_found", http.StatusNotFound)
	testkit.RequireProblem(t, b.api.Get("/v1/loans/0"), "validation_failed", http.StatusUnprocessableEntity)
	testkit.RequireProblem(t, b.api.Get("/v1/loans/abc"), "validation_failed", http.StatusUnprocessableEntity)

	type page struct {
		Loans      []api.LoanBody `json:"loans"`
		NextCursor string         `json:"next_cursor"`
	}
	var got []int64
	url := "/v1/loans?limit=2&borrower_id=" + borrower
	for range 10 {
		rec := b.api.Get(url)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		p := testkit.DecodeJSON[page](t, rec)
		require.LessOrEqual(t, len(p.Loans), 2)
		for _, l := range p.Loans {
			require.Equal(t, borrower, l.BorrowerID)
			got = append(got, l.ID)
		}
		if p.NextCursor == "" {
			break
		}
		url = "/v1/loans?limit=2&borrower_id=" + borrower + "&cursor=" + p.NextCursor
	}
	require.Equal(t, []int64{ids[4], ids[3], ids[2], ids[1], ids[0]}, got, "every loan once, newest first")

	for status, want := range map[string][]int64{
		"REPAID": {ids[1]},
		"ACTIVE": {ids[4], ids[3], ids[2], ids[0]},
	} {
		rec := b.api.Get("/v1/loans?status=" + status + "&borrower_id=" + borrower)
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		p := testkit.DecodeJSON[page](t, rec)
		var ids []int64
		for _, l := range p.Loans {
			require.Equal(t, status, l.Status)
			ids = append(ids, l.ID)
		}
		require.Equal(t, want, ids, status)
		require.Empty(t, p.NextCursor)
	}
	rec = b.api.Get("/v1/loans?status=OVERDUE&borrower_id=" + borrower)
	require.Equal(t, http.StatusOK, rec.Code)
	require.Empty(t, testkit.DecodeJSON[page](t, rec).Loans)
	require.Contains(t, rec.Body.String(), `"loans":[]`)

	for name, u := range map[string]string{
		"BadStatus":   "/v1/loans?status=LOST",
		"BadLimit":    "/v1/loans?limit=501",
		"ZeroLimit":   "/v1/loans?limit=0",
		"BadCursor":   "/v1/loans?cursor=%21%21",
		"OtherCursor": "/v1/loans?cursor=bm9wZQ",
		"BadBorrower": "/v1/loans?borrower_id=a%20b",
	} {
		rec := b.api.Get(u)
		t.Logf("%s → %d", name, rec.Code)
		testkit.RequireProblem(t, rec, "validation_failed", http.StatusUnprocessableEntity)
	}
}

func TestLendingAPIRepayments(t *testing.T) {
	t.Parallel()
	b := setupLendingAPI(t)
	borrower := b.ID("dealer")
	b.putLine(t, borrower, 10_000, "CNY", false)
	l := b.createLoan(t, lendingWith(lendingLoanRequest(borrower, b.ID("L-1"), 1_000), "interest_mode", "SPLIT", "manufacturer_id", "maker-1", "manufacturer_share_bps", 2500))
	// What close of business would have accrued.
	_, err := b.DB.Exec(b.Ctx, `UPDATE loan SET penalty_outstanding_minor = 100, late_fee_outstanding_minor = 50,
		interest_outstanding_dealer_minor = 200, interest_outstanding_manufacturer_minor = 70 WHERE id = $1`, l.ID)
	require.NoError(t, err)
	path := fmt.Sprintf("/v1/loans/%d/repayments", l.ID)
	pay := map[string]any{"identifier": "bank-tx-1", "payer": "DEALER", "amount_minor": 400, "value_date": "2026-02-01"}

	rec := b.api.Post(path, pay)
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	r := testkit.DecodeJSON[api.RepaymentBody](t, rec)
	require.Equal(t, api.AllocationBody{PenaltyMinor: 100, LateFeeMinor: 50, InterestMinor: 200, InterestDealerMinor: 200, PrincipalMinor: 50}, r.Allocation)
	for _, f := range []string{`"penalty_minor":100`, `"late_fee_minor":50`, `"interest_minor":200`, `"principal_minor":50`} {
		require.Contains(t, rec.Body.String(), f)
	}
	require.Equal(t, "2026-02-01", r.ValueDate)
	require.Equal(t, "CNY", r.Currency)
	require.NotNil(t, r.Loan)
	require.EqualValues(t, 950, r.Loan.PrincipalOutstandingMinor)
	require.EqualValues(t, 70, r.Loan.InterestOutstandingManufacturerMinor)
	job := rivertest.RequireInsertedTx[*riverpgxv5.Driver](b.Ctx, t, b.Tx, &lending.RestoreArgs{RepaymentID: r.ID}, nil)
	require.Equal(t, r.ID, job.Args.RepaymentID)

	// Replay: 200 with the original; another payload: 409.
	before := b.writes(t)
	rec = b.api.Post(path, pay)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	require.Equal(t, r.ID, testkit.DecodeJSON[api.RepaymentBody](t, rec).ID)
	prob := testkit.RequireProblem(t, b.api.Post(path, lendingWith(pay, "amount_minor", 401)), "idempotency_conflict", http.StatusConflict)
	require.EqualValues(t, r.ID, prob.Details["repayment_id"])
	require.Equal(t, before, b.writes(t))

	// The manufacturer pays its interest only.
	rec = b.api.Post(path, map[string]any{"identifier": "maker-tx-1", "payer": "MANUFACTURER", "amount_minor": 70})
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	m := testkit.DecodeJSON[api.RepaymentBody](t, rec)
	require.Equal(t, api.AllocationBody{InterestMinor: 70, InterestManufacturerMinor: 70}, m.Allocation)
	require.Equal(t, b.Services.Lending.Today().Format(lending.DateLayout), m.ValueDate, "value_date defaults to today")
	rivertest.RequireInsertedTx[*riverpgxv5.Driver](b.Ctx, t, b.Tx, &lending.RestoreArgs{RepaymentID: r.ID}, nil) // still the only one

	before = b.writes(t)
	prob = testkit.RequireProblem(t, b.api.Post(path, lendingWith(pay, "identifier", "too-much", "amount_minor", 951)), "overpayment", http.StatusUnprocessableEntity)
	require.EqualValues(t, 950, prob.Details["owed_minor"])
	require.Equal(t, before, b.writes(t))

	_, err = b.DB.Exec(b.Ctx, "UPDATE loan SET last_closed_date = '2026-03-31' WHERE id = $1", l.ID)
	require.NoError(t, err)
	tomorrow := b.Services.Lending.Today().AddDate(0, 0, 1).Format(lending.DateLayout)
	tests := []struct {
		name   string
		path   string
		body   any
		status int
		code   string
	}{
		{"UnknownLoan", "/v1/loans/999999999999/repayments", lendingWith(pay, "identifier", "x"), 404, "not_found"},
		{"ZeroLoanID", "/v1/loans/0/repayments", lendingWith(pay, "identifier", "x"), 422, "validation_failed"},
		{"ValueDateMalformed", path, lendingWith(pay, "identifier", "x", "value_date", "2026-4-1"), 422, "validation_failed"},
		{"ValueDateNotADay", path, lendingWith(pay, "identifier", "x", "value_date", "2026-04-31"), 422, "validation_failed"},
		{"ValueDateInTheFuture", path, lendingWith(pay, "identifier", "x", "value_date", tomorrow), 422, "validation_failed"},
		{"ValueDateClosed", path, lendingWith(pay, "identifier", "x", "value_date", "2026-03-31"), 409, "date_not_open"},
		{"PayerUnknown", path, lendingWith(pay, "identifier", "x", "payer", "BANK"), 422, "validation_failed"},
		{"AmountZero", path, lendingWith(pay, "identifier", "x", "amount_minor", 0), 422, "validation_failed"},
		{"AmountNegative", path, lendingWith(pay, "identifier", "x", "amount_minor", -1), 422, "validation_failed"},
		{"AmountAsString", path, lendingWith(pay, "identifier", "x", "amount_minor", "1"), 422, "validation_failed"},
		{"IdentifierMissing", path, lendingWithout(pay, "identifier"), 422, "validation_failed"},
		{"IdentifierTooLong", path, lendingWith(pay, "identifier", strings.Repeat("x", 129)), 422, "validation_failed"},
		{"IdentifierWithNUL", path, lendingWith(pay, "identifier", "a\u0000b"), 422, "validation_failed"},
		{"UnknownField", path, lendingWith(pay, "identifier", "x", "currency", "CNY"), 422, "validation_failed"},
	}
	for _, tt := range tests {
		rec := b.api.Post(tt.path, tt.body)
		t.Logf("%s → %d", tt.name, rec.Code)
		testkit.RequireProblem(t, rec, tt.code, tt.status)
		require.Equal(t, before, b.writes(t), tt.name)
	}
	prob = testkit.RequireProblem(t, b.api.Post(path, lendingWith(pay, "identifier", "x", "value_date", "2026-03-01")), "date_not_open", http.StatusConflict)
	require.Equal(t, "2026-04-01", prob.Details["first_open_date"])
	rec = b.api.Post(path, "Content-Type: application/json", strings.NewReader(`{"identifier": "x",`))
	testkit.RequireProblem(t, rec, "validation_failed", http.StatusBadRequest, http.StatusUnprocessableEntity)
	require.Equal(t, before, b.writes(t))

	// The list: oldest first, in pages.
	type page struct {
		Repayments []api.RepaymentBody `json:"repayments"`
		NextCursor string              `json:"next_cursor"`
	}
	rec = b.api.Get(path)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	p := testkit.DecodeJSON[page](t, rec)
	require.Len(t, p.Repayments, 2)
	require.Equal(t, []int64{r.ID, m.ID}, []int64{p.Repayments[0].ID, p.Repayments[1].ID})
	require.Equal(t, r.Allocation, p.Repayments[0].Allocation)
	require.Empty(t, p.NextCursor)

	rec = b.api.Get(path + "?limit=1")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	p = testkit.DecodeJSON[page](t, rec)
	require.Equal(t, r.ID, p.Repayments[0].ID)
	require.NotEmpty(t, p.NextCursor)
	rec = b.api.Get(path + "?limit=1&cursor=" + p.NextCursor)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	p = testkit.DecodeJSON[page](t, rec)
	require.Len(t, p.Repayments, 1)
	require.Equal(t, m.ID, p.Repayments[0].ID)

	testkit.RequireProblem(t, b.api.Get("/v1/loans/999999999999/repayments"), "not_found", http.StatusNotFound)
	testkit.RequireProblem(t, b.api.Get(path+"?cursor=%21%21"), "validation_failed", http.StatusUnprocessableEntity)

	// identifier's limit is 128 characters, not bytes.
	rec = b.api.Post(path, map[string]any{"identifier": strings.Repeat("é", 128), "payer": "DEALER", "amount_minor": 1, "value_date": "2026-04-01"})
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
}

// TestLendingAPIDocumentsEveryStatus: every status a lending operation
// answers by itself is in the OpenAPI document — including the 200 of an
// idempotent replay (or an update) next to the 201 of a create, with the
// same body — so a generated client parses every answer.
func TestLendingAPIDocumentsEveryStatus(t *testing.T) {
	t.Parallel()
	_, tapi := humatest.New(t)
	api.Register(tapi, &api.Services{Services: testkit.Tx(t).Services})
	paths := tapi.OpenAPI().Paths
	for _, tc := range []struct {
		path, method string
		statuses     []string
	}{
		{"/v1/credit-lines/{borrower_id}", http.MethodPut, []string{"200", "201", "409", "422"}},
		{"/v1/credit-lines/{borrower_id}", http.MethodGet, []string{"200", "404", "422"}},
		{"/v1/loans", http.MethodPost, []string{"200", "201", "409", "422"}},
		{"/v1/loans", http.MethodGet, []string{"200", "422"}},
		{"/v1/loans/{id}", http.MethodGet, []string{"200", "404", "422"}},
		{"/v1/loans/{id}/repayments", http.MethodPost, []string{"200", "201", "404", "409", "422"}},
		{"/v1/loans/{id}/repayments", http.MethodGet, []string{"200", "404", "422"}},
	} {
		item := paths[tc.path]
		require.NotNil(t, item, tc.path)
		op := map[string]*huma.Operation{http.MethodGet: item.Get, http.MethodPost: item.Post, http.MethodPut: item.Put}[tc.method]
		require.NotNil(t, op, "%s %s", tc.method, tc.path)
		var got []string
		for code := range op.Responses {
			got = append(got, code)
		}
		require.Subset(t, got, tc.statuses, "%s %s", tc.method, tc.path)
		if ok := op.Responses["200"]; ok != nil && op.Responses["201"] != nil {
			// The replay's body is the create's body.
			require.Equal(t, op.Responses["201"].Content["application/json"].Schema.Ref, ok.Content["application/json"].Schema.Ref, "%s %s", tc.method, tc.path)
			require.NotEmpty(t, ok.Content["application/json"].Schema.Ref)
		}
	}
}
