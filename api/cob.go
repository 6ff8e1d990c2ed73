package api

import (
	"context"
	"encoding/json"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"riverbank"
	"riverbank/internal/cob"
	"riverbank/internal/collection"
)

// COBTotalsBody is what a run accrued in one currency.
type COBTotalsBody struct {
	Currency                  string `json:"currency"`
	InterestDealerMinor       int64  `json:"interest_dealer_minor"`
	InterestManufacturerMinor int64  `json:"interest_manufacturer_minor"`
	PenaltyMinor              int64  `json:"penalty_minor"`
	LateFeeMinor              int64  `json:"late_fee_minor"`
}

// FailedLoanBody is a loan a run could not close.
type FailedLoanBody struct {
	LoanID   int64     `json:"loan_id"`
	Error    string    `json:"error" doc:"What failed (SQLSTATE condition and constraint; no values)."`
	FailedAt time.Time `json:"failed_at"`
}

// COBRunBody is a close-of-business run.
type COBRunBody struct {
	Date           string           `json:"date" format:"date"`
	Status         string           `json:"status" enum:"RUNNING,COMPLETED,FAILED" doc:"COMPLETED closes the date; FAILED keeps it open until retry-failures closes the failed loans."`
	LoansTotal     int64            `json:"loans_total"`
	LoansDone      int64            `json:"loans_done"`
	LoansFailed    int64            `json:"loans_failed"`
	ChunksTotal    int32            `json:"chunks_total"`
	ChunksDone     int32            `json:"chunks_done"`
	Totals         []COBTotalsBody  `json:"totals" doc:"What the run accrued, one line per currency (an amount has one currency)."`
	FailedLoans    []FailedLoanBody `json:"failed_loans" doc:"At most 500."`
	TrialBalance   NullableObject   `json:"trial_balance" doc:"Set by cob.trial_balance after the run closes: {balanced, ledger, subledger, run_postings_match, checked_at}; null before."`
	CatchUpThrough *string          `json:"catch_up_through,omitempty" format:"date" doc:"The scheduler's catch-up target: the next date starts when this one closes."`
	StartedAt      time.Time        `json:"started_at"`
	CompletedAt    *time.Time       `json:"completed_at,omitempty"`
}

// NullableObject is a stored JSON object passed through as it is, or null
// when there is none (a run's trial balance before it is checked). Its
// schema says both, in the OpenAPI 3.1 document and its 3.0 form alike (a
// bare json.RawMessage documents nothing, which 3.0 reads as not null).
type NullableObject json.RawMessage

// MarshalJSON writes the object, or null.
func (o NullableObject) MarshalJSON() ([]byte, error) {
	if len(o) == 0 {
		return []byte("null"), nil
	}
	return o, nil
}

// UnmarshalJSON keeps the object's JSON (null as empty).
func (o *NullableObject) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		*o = nil
		return nil
	}
	*o = append((*o)[:0], data...)
	return nil
}

// Schema implements huma.SchemaProvider: an object or null.
func (NullableObject) Schema(huma.Registry) *huma.Schema {
	return &huma.Schema{Type: huma.TypeObject, Nullable: true, AdditionalProperties: true}
}

func cobRunBody(r *cob.Run) COBRunBody {
	b := COBRunBody{Date: dateString(r.BusinessDate), Status: string(r.Status), LoansTotal: r.LoansTotal, LoansDone: r.LoansDone,
		LoansFailed: r.LoansFailed, ChunksTotal: r.ChunksTotal, ChunksDone: r.ChunksDone, StartedAt: r.StartedAt, CompletedAt: r.CompletedAt,
		Totals: []COBTotalsBody{}, FailedLoans: []FailedLoanBody{}}
	for _, t := range r.Totals {
		b.Totals = append(b.Totals, COBTotalsBody(t))
	}
	for _, f := range r.FailedLoans {
		b.FailedLoans = append(b.FailedLoans, FailedLoanBody(f))
	}
	if len(r.TrialBalance) > 0 {
		b.TrialBalance = NullableObject(r.TrialBalance)
	}
	if r.CatchUpThrough != nil {
		d := dateString(*r.CatchUpThrough)
		b.CatchUpThrough = &d
	}
	return b
}

type cobDateInput struct {
	Date string `path:"date" format:"date" doc:"Business date, YYYY-MM-DD." example:"2026-03-20"`
}

type cobRunOutput struct {
	Status int
	Body   COBRunBody
}

type listCOBRunsInput struct {
	PageParams
}

type listCOBRunsOutput struct {
	Body struct {
		Runs       []COBRunBody `json:"runs" doc:"Newest date first."`
		NextCursor string       `json:"next_cursor,omitempty"`
	}
}

// CaseLoanBody is a loan in a collection case.
type CaseLoanBody struct {
	LoanID           int64      `json:"loan_id"`
	LoanNo           string     `json:"loan_no"`
	Currency         string     `json:"currency"`
	Status           string     `json:"status" enum:"ACTIVE,OVERDUE,REPAID" doc:"The loan's status now."`
	DaysPastDue      int32      `json:"days_past_due"`
	OutstandingMinor int64      `json:"outstanding_minor" doc:"Everything the loan owes now (principal, interest, penalty, late fee)."`
	OverdueSince     string     `json:"overdue_since" format:"date"`
	ResolvedAt       *time.Time `json:"resolved_at,omitempty" doc:"When the loan left collection (repaid or no longer overdue)."`
}

// CurrencyAmountBody is an amount in one currency.
type CurrencyAmountBody struct {
	Currency    string `json:"currency"`
	AmountMinor int64  `json:"amount_minor"`
}

// CaseBody is a collection case.
type CaseBody struct {
	ID             int64                `json:"id"`
	BorrowerID     string               `json:"borrower_id"`
	Status         string               `json:"status" enum:"OPEN,CLOSED"`
	Loans          []CaseLoanBody       `json:"loans" doc:"Every loan that was in the case; resolved ones carry resolved_at."`
	ItemCount      int                  `json:"item_count" doc:"Loans in the case still overdue."`
	OverdueTotals  []CurrencyAmountBody `json:"overdue_totals" doc:"What those loans owe now, per currency."`
	MaxDaysPastDue int32                `json:"max_days_past_due"`
	OpenedAt       time.Time            `json:"opened_at"`
	ClosedAt       *time.Time           `json:"closed_at"`
}

func caseBody(c *collection.Case) CaseBody {
	b := CaseBody{ID: c.ID, BorrowerID: c.BorrowerID, Status: string(c.Status), ItemCount: c.ItemCount, MaxDaysPastDue: c.MaxDaysPastDue,
		OpenedAt: c.OpenedAt, ClosedAt: c.ClosedAt, Loans: []CaseLoanBody{}, OverdueTotals: []CurrencyAmountBody{}}
	for _, l := range c.Loans {
		b.Loans = append(b.Loans, CaseLoanBody{LoanID: l.LoanID, LoanNo: l.LoanNo, Currency: l.Currency, Status: l.LoanStatus, DaysPastDue: l.DaysPastDue,
			OutstandingMinor: l.OutstandingMinor, OverdueSince: dateString(l.OpenedOn), ResolvedAt: l.ResolvedAt})
	}
	for _, t := range c.OverdueTotals {
		b.OverdueTotals = append(b.OverdueTotals, CurrencyAmountBody(t))
	}
	return b
}

type caseIDInput struct {
	ID int64 `path:"id" minimum:"1"`
}

type caseOutput struct {
	Body CaseBody
}

type listCasesInput struct {
	BorrowerID string `query:"borrower_id" maxLength:"64"`
	Status     string `query:"status" enum:"OPEN,CLOSED"`
	PageParams
}

type listCasesOutput struct {
	Body struct {
		Cases      []CaseBody `json:"cases" doc:"Newest first."`
		NextCursor string     `json:"next_cursor,omitempty"`
	}
}

// MonthAccrualBody is what a loan accrued in one month.
type MonthAccrualBody struct {
	Month                     string `json:"month" example:"2026-03" doc:"YYYY-MM."`
	InterestDealerMinor       int64  `json:"interest_dealer_minor"`
	InterestManufacturerMinor int64  `json:"interest_manufacturer_minor"`
	PenaltyMinor              int64  `json:"penalty_minor"`
	LateFeeMinor              int64  `json:"late_fee_minor"`
	Current                   bool   `json:"current" doc:"The month still accruing."`
}

type accrualsOutput struct {
	Body struct {
		LoanID int64              `json:"loan_id"`
		Months []MonthAccrualBody `json:"months" doc:"Oldest first."`
	}
}

func (h *handlers) registerCOB(api huma.API) {
	tags := []string{"Close of business"}
	huma.Register(api, huma.Operation{OperationID: "start-cob-run", Method: http.MethodPut, Path: "/v1/cob-runs/{date}", Summary: "Start the close of business for a date", Tags: tags,
		Description: "Starts the run (202): in one transaction the run and its chunk jobs over fixed loan-id ranges. Runs are sequential: the date must be the first open date " +
			"(409 date_not_open names it) and must be over (422 for today or later). A date that already has a run returns that run (200): a closed date is never re-run.",
		DefaultStatus: http.StatusAccepted,
		Metadata:      answers(codes(riverbank.EDATENOTOPEN), map[int]string{http.StatusOK: "The date already has a run: that run as it is now. Nothing is written."})}, h.startCOBRun)
	huma.Register(api, huma.Operation{OperationID: "get-cob-run", Method: http.MethodGet, Path: "/v1/cob-runs/{date}", Summary: "Get a close-of-business run with its progress and totals", Tags: tags,
		Metadata: answers(codes(riverbank.ENOTFOUND), nil)}, h.getCOBRun)
	huma.Register(api, huma.Operation{OperationID: "list-cob-runs", Method: http.MethodGet, Path: "/v1/cob-runs", Summary: "List close-of-business runs, newest first", Tags: tags}, h.listCOBRuns)
	huma.Register(api, huma.Operation{OperationID: "retry-cob-failures", Method: http.MethodPost, Path: "/v1/cob-runs/{date}/retry-failures", Summary: "Re-run a FAILED run's failed loans", Tags: tags,
		Description:   "The run turns RUNNING and cob.retry_failures closes its failed loans one by one (202); it becomes COMPLETED when none fails again. A run that is not FAILED is 409 conflict.",
		DefaultStatus: http.StatusAccepted, Metadata: answers(codes(riverbank.ENOTFOUND, riverbank.ECONFLICT), nil)}, h.retryCOBFailures)

	ctags := []string{"Collection"}
	huma.Register(api, huma.Operation{OperationID: "list-cases", Method: http.MethodGet, Path: "/v1/cases", Summary: "List collection cases, newest first", Tags: ctags}, h.listCases)
	huma.Register(api, huma.Operation{OperationID: "get-case", Method: http.MethodGet, Path: "/v1/cases/{id}", Summary: "Get a collection case with its loans and live totals", Tags: ctags,
		Metadata: answers(codes(riverbank.ENOTFOUND), nil)}, h.getCase)
	huma.Register(api, huma.Operation{OperationID: "get-loan-accruals", Method: http.MethodGet, Path: "/v1/loans/{id}/accruals", Summary: "A loan's accruals by month", Tags: []string{"Lending"},
		Metadata: answers(codes(riverbank.ENOTFOUND), nil)}, h.getLoanAccruals)
}

func (h *handlers) startCOBRun(ctx context.Context, in *cobDateInput) (*cobRunOutput, error) {
	d, err := cob.ParseDate(in.Date)
	if err != nil {
		return nil, err
	}
	r, created, err := h.COB.Start(ctx, d)
	if err != nil {
		return nil, err
	}
	status := http.StatusOK
	if created {
		status = http.StatusAccepted
	}
	return &cobRunOutput{Status: status, Body: cobRunBody(r)}, nil
}

func (h *handlers) getCOBRun(ctx context.Context, in *cobDateInput) (*cobRunOutput, error) {
	d, err := cob.ParseDate(in.Date)
	if err != nil {
		return nil, err
	}
	r, err := h.COB.Get(ctx, d)
	if err != nil {
		return nil, err
	}
	return &cobRunOutput{Status: http.StatusOK, Body: cobRunBody(r)}, nil
}

func (h *handlers) listCOBRuns(ctx context.Context, in *listCOBRunsInput) (*listCOBRunsOutput, error) {
	var before time.Time
	if in.Cursor != "" {
		s, err := decodeCursor(in.Cursor)
		if err != nil {
			return nil, err
		}
		if before, err = cob.ParseDate(s); err != nil {
			return nil, riverbank.Errorf(riverbank.EINVALID, "cursor is not valid: pass next_cursor from a previous page unchanged")
		}
	}
	limit := in.limit()
	runs, err := h.COB.List(ctx, before, limit)
	if err != nil {
		return nil, err
	}
	out := &listCOBRunsOutput{}
	out.Body.Runs = make([]COBRunBody, len(runs))
	for i, r := range runs {
		out.Body.Runs[i] = cobRunBody(r)
	}
	if len(runs) == limit {
		out.Body.NextCursor = encodeCursor(dateString(runs[len(runs)-1].BusinessDate))
	}
	return out, nil
}

func (h *handlers) retryCOBFailures(ctx context.Context, in *cobDateInput) (*cobRunOutput, error) {
	d, err := cob.ParseDate(in.Date)
	if err != nil {
		return nil, err
	}
	r, err := h.COB.RetryFailures(ctx, d)
	if err != nil {
		return nil, err
	}
	return &cobRunOutput{Status: http.StatusAccepted, Body: cobRunBody(r)}, nil
}

func (h *handlers) getCase(ctx context.Context, in *caseIDInput) (*caseOutput, error) {
	c, err := h.Collection.Get(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	return &caseOutput{Body: caseBody(c)}, nil
}

func (h *handlers) listCases(ctx context.Context, in *listCasesInput) (*listCasesOutput, error) {
	var before int64
	if in.Cursor != "" {
		var err error
		if before, err = decodeIDCursor(in.Cursor); err != nil {
			return nil, err
		}
	}
	limit := in.limit()
	cs, err := h.Collection.List(ctx, collection.Filter{BorrowerID: in.BorrowerID, Status: in.Status, BeforeID: before, Limit: limit})
	if err != nil {
		return nil, err
	}
	out := &listCasesOutput{}
	out.Body.Cases = make([]CaseBody, len(cs))
	for i, c := range cs {
		out.Body.Cases[i] = caseBody(c)
	}
	if len(cs) == limit {
		out.Body.NextCursor = encodeIDCursor(cs[len(cs)-1].ID)
	}
	return out, nil
}

func (h *handlers) getLoanAccruals(ctx context.Context, in *loanIDInput) (*accrualsOutput, error) {
	ms, err := h.Lending.Accruals(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	out := &accrualsOutput{}
	out.Body.LoanID = in.ID
	out.Body.Months = make([]MonthAccrualBody, len(ms))
	for i, m := range ms {
		out.Body.Months[i] = MonthAccrualBody{Month: m.Month.Format("2006-01"), InterestDealerMinor: m.InterestDealerMinor,
			InterestManufacturerMinor: m.InterestManufacturerMinor, PenaltyMinor: m.PenaltyMinor, LateFeeMinor: m.LateFeeMinor, Current: m.Current}
	}
	return out, nil
}

// withCases fills the case_id of loans from their open collection items.
func (h *handlers) withCases(ctx context.Context, bodies []LoanBody) error {
	if len(bodies) == 0 {
		return nil
	}
	ids := make([]int64, len(bodies))
	for i, b := range bodies {
		ids[i] = b.ID
	}
	cases, err := h.Collection.OpenCaseOfLoans(ctx, ids)
	if err != nil {
		return err
	}
	for i := range bodies {
		if c, ok := cases[bodies[i].ID]; ok {
			bodies[i].CaseID = &c
		}
	}
	return nil
}
