package api

import (
	"context"
	"net/http"
	"time"

	"github.com/danielgtaylor/huma/v2"

	"riverbank"
	"riverbank/internal/lending"
)

// CreditLineBody is a credit line as the API shows it.
type CreditLineBody struct {
	BorrowerID     string    `json:"borrower_id"`
	Currency       string    `json:"currency" example:"CNY"`
	LimitMinor     int64     `json:"limit_minor"`
	UsedMinor      int64     `json:"used_minor" doc:"Principal taken by loans and not yet restored."`
	AvailableMinor int64     `json:"available_minor" doc:"limit − used, and 0 when the limit was lowered below what is used."`
	Frozen         bool      `json:"frozen" doc:"A frozen line takes no new loans, and restorations wait (retry) until it is unfrozen."`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

func creditLineBody(c *lending.CreditLine) CreditLineBody {
	return CreditLineBody{BorrowerID: c.BorrowerID, Currency: c.Currency, LimitMinor: c.LimitMinor, UsedMinor: c.UsedMinor,
		AvailableMinor: c.AvailableMinor(), Frozen: c.Frozen, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt}
}

// LoanBody is a loan: its terms, status and what it owes.
type LoanBody struct {
	ID                                   int64      `json:"id"`
	LoanNo                               string     `json:"loan_no"`
	BorrowerID                           string     `json:"borrower_id"`
	Currency                             string     `json:"currency"`
	PrincipalMinor                       int64      `json:"principal_minor"`
	AnnualRateBps                        int32      `json:"annual_rate_bps"`
	PenaltyRateBps                       int32      `json:"penalty_rate_bps"`
	LateFeeMinor                         int64      `json:"late_fee_minor"`
	StartDate                            string     `json:"start_date" format:"date"`
	DueDate                              string     `json:"due_date" format:"date"`
	InterestMode                         string     `json:"interest_mode" enum:"DEALER,MANUFACTURER,SPLIT"`
	DealerID                             string     `json:"dealer_id"`
	ManufacturerID                       *string    `json:"manufacturer_id,omitempty"`
	ManufacturerShareBps                 int32      `json:"manufacturer_share_bps"`
	Status                               string     `json:"status" enum:"ACTIVE,OVERDUE,REPAID"`
	PrincipalOutstandingMinor            int64      `json:"principal_outstanding_minor"`
	InterestOutstandingDealerMinor       int64      `json:"interest_outstanding_dealer_minor"`
	InterestOutstandingManufacturerMinor int64      `json:"interest_outstanding_manufacturer_minor"`
	PenaltyOutstandingMinor              int64      `json:"penalty_outstanding_minor"`
	LateFeeOutstandingMinor              int64      `json:"late_fee_outstanding_minor"`
	DaysPastDue                          int32      `json:"days_past_due"`
	CaseID                               *int64     `json:"case_id" doc:"The collection case holding this loan while it is overdue; null otherwise."`
	LastClosedDate                       *string    `json:"last_closed_date" format:"date" doc:"The last business date close of business processed for this loan; null before the first."`
	DisbursementEntryID                  int64      `json:"disbursement_entry_id" doc:"The journal entry that disbursed the principal."`
	CreatedAt                            time.Time  `json:"created_at"`
	UpdatedAt                            time.Time  `json:"updated_at"`
	RepaidAt                             *time.Time `json:"repaid_at,omitempty"`
}

func dateString(t time.Time) string { return t.Format(lending.DateLayout) }

func loanBody(l *lending.Loan) LoanBody {
	b := LoanBody{
		ID: l.ID, LoanNo: l.LoanNo, BorrowerID: l.BorrowerID, Currency: l.Currency, PrincipalMinor: l.PrincipalMinor,
		AnnualRateBps: l.AnnualRateBps, PenaltyRateBps: l.PenaltyRateBps, LateFeeMinor: l.LateFeeMinor,
		StartDate: dateString(l.StartDate), DueDate: dateString(l.DueDate), InterestMode: string(l.InterestMode),
		DealerID: l.DealerID, ManufacturerID: l.ManufacturerID, ManufacturerShareBps: l.ManufacturerShareBps,
		Status: string(l.Status), PrincipalOutstandingMinor: l.PrincipalOutstandingMinor,
		InterestOutstandingDealerMinor: l.InterestOutstandingDealerMinor, InterestOutstandingManufacturerMinor: l.InterestOutstandingManufacturerMinor,
		PenaltyOutstandingMinor: l.PenaltyOutstandingMinor, LateFeeOutstandingMinor: l.LateFeeOutstandingMinor,
		DaysPastDue: l.DaysPastDue, DisbursementEntryID: l.DisbursementEntryID,
		CreatedAt: l.CreatedAt, UpdatedAt: l.UpdatedAt, RepaidAt: l.RepaidAt,
	}
	if l.LastClosedDate != nil {
		d := dateString(*l.LastClosedDate)
		b.LastClosedDate = &d
	}
	return b
}

// AllocationBody is what a repayment paid, by component.
type AllocationBody struct {
	PenaltyMinor              int64 `json:"penalty_minor"`
	LateFeeMinor              int64 `json:"late_fee_minor"`
	InterestMinor             int64 `json:"interest_minor" doc:"Dealer plus manufacturer interest."`
	InterestDealerMinor       int64 `json:"interest_dealer_minor"`
	InterestManufacturerMinor int64 `json:"interest_manufacturer_minor"`
	PrincipalMinor            int64 `json:"principal_minor"`
}

// RepaymentBody is an accepted repayment.
type RepaymentBody struct {
	ID            int64          `json:"id"`
	LoanID        int64          `json:"loan_id"`
	Identifier    string         `json:"identifier"`
	Payer         string         `json:"payer" enum:"DEALER,MANUFACTURER"`
	AmountMinor   int64          `json:"amount_minor"`
	Currency      string         `json:"currency,omitempty"`
	ValueDate     string         `json:"value_date" format:"date"`
	Allocation    AllocationBody `json:"allocation"`
	LedgerEntryID int64          `json:"ledger_entry_id"`
	CreatedAt     time.Time      `json:"created_at"`
	Loan          *LoanBody      `json:"loan,omitempty" doc:"The loan after this repayment (in the create response; on a replay, the loan as it is now)."`
}

func repaymentBody(r *lending.Repayment) RepaymentBody {
	a := r.Allocation()
	b := RepaymentBody{
		ID: r.ID, LoanID: r.LoanID, Identifier: r.Identifier, Payer: string(r.Payer), AmountMinor: r.AmountMinor,
		ValueDate: dateString(r.ValueDate), LedgerEntryID: r.LedgerEntryID, CreatedAt: r.CreatedAt,
		Allocation: AllocationBody{PenaltyMinor: a.PenaltyMinor, LateFeeMinor: a.LateFeeMinor, InterestMinor: a.InterestMinor(),
			InterestDealerMinor: a.InterestDealerMinor, InterestManufacturerMinor: a.InterestManufacturerMinor, PrincipalMinor: a.PrincipalMinor},
	}
	if r.Loan != nil {
		lb := loanBody(r.Loan)
		b.Loan, b.Currency = &lb, r.Loan.Currency
	}
	return b
}

type putCreditLineInput struct {
	BorrowerID string `path:"borrower_id" maxLength:"64" doc:"The borrower (dealer) the line belongs to."`
	Body       struct {
		LimitMinor int64  `json:"limit_minor" minimum:"0" maximum:"1000000000000000" doc:"May be lowered below used_minor: available becomes 0, nothing is clawed back."`
		Currency   string `json:"currency" pattern:"^[A-Z]{3}$" doc:"ISO 4217; fixed for the life of the line (another currency is 409 conflict)." example:"CNY"`
		Frozen     bool   `json:"frozen,omitempty" doc:"Stops new loans; restorations wait until unfrozen."`
	}
}

type creditLineOutput struct {
	Status int
	Body   CreditLineBody
}

type borrowerInput struct {
	BorrowerID string `path:"borrower_id" maxLength:"64"`
}

type createLoanInput struct {
	Body struct {
		LoanNo               string `json:"loan_no" minLength:"1" maxLength:"64" doc:"The idempotency key: the same request again returns the loan (200); another request with it is 409." example:"L-2026-0001"`
		BorrowerID           string `json:"borrower_id" minLength:"1" maxLength:"64" example:"dealer-42"`
		Currency             string `json:"currency" pattern:"^[A-Z]{3}$" doc:"Must be the credit line's currency (else 422)." example:"CNY"`
		PrincipalMinor       int64  `json:"principal_minor" minimum:"1" maximum:"1000000000000000"`
		AnnualRateBps        int64  `json:"annual_rate_bps" minimum:"0" maximum:"100000" doc:"Yearly interest in basis points (daily interest = principal × rate / (10000 × 365), rounded half to even)."`
		PenaltyRateBps       int64  `json:"penalty_rate_bps" minimum:"0" maximum:"100000" doc:"Yearly penalty interest on overdue amounts, in basis points."`
		LateFeeMinor         int64  `json:"late_fee_minor" minimum:"0" maximum:"1000000000000000" doc:"Charged once a month on the late-fee day while interest is overdue."`
		StartDate            string `json:"start_date" format:"date" example:"2026-01-05"`
		DueDate              string `json:"due_date" format:"date" doc:"After start_date." example:"2026-07-05"`
		InterestMode         string `json:"interest_mode" enum:"DEALER,MANUFACTURER,SPLIT" doc:"Who bears the interest: the dealer (borrower), the manufacturer, or split by manufacturer_share_bps."`
		DealerID             string `json:"dealer_id" minLength:"1" maxLength:"64"`
		ManufacturerID       string `json:"manufacturer_id,omitempty" maxLength:"64" doc:"Required for MANUFACTURER and SPLIT."`
		ManufacturerShareBps int64  `json:"manufacturer_share_bps,omitempty" minimum:"0" maximum:"9999" doc:"SPLIT only: the manufacturer's share of each day's interest (1..9999); must be absent otherwise."`
	}
}

type loanOutput struct {
	Status int
	Body   LoanBody
}

type loanIDInput struct {
	ID int64 `path:"id" minimum:"1"`
}

type listLoansInput struct {
	BorrowerID string `query:"borrower_id" maxLength:"64"`
	Status     string `query:"status" enum:"ACTIVE,OVERDUE,REPAID"`
	PageParams
}

type listLoansOutput struct {
	Body struct {
		Loans      []LoanBody `json:"loans" doc:"Newest first."`
		NextCursor string     `json:"next_cursor,omitempty"`
	}
}

type createRepaymentInput struct {
	ID   int64 `path:"id" minimum:"1"`
	Body struct {
		Identifier  string `json:"identifier" minLength:"1" maxLength:"128" doc:"Idempotency key per loan." example:"bank-tx-77812"`
		Payer       string `json:"payer" enum:"DEALER,MANUFACTURER" doc:"DEALER pays penalty → late fee → dealer interest → principal; MANUFACTURER pays manufacturer interest only."`
		AmountMinor int64  `json:"amount_minor" minimum:"1" maximum:"1000000000000000" doc:"In the loan's currency; more than the payer owes is 422 overpayment."`
		ValueDate   string `json:"value_date,omitempty" format:"date" doc:"Defaults to today in the business time zone; must be after the loan's last_closed_date (409 date_not_open), not before its start_date and not in the future (422)."`
	}
}

type repaymentOutput struct {
	Status int
	Body   RepaymentBody
}

type listRepaymentsInput struct {
	ID int64 `path:"id" minimum:"1"`
	PageParams
}

type listRepaymentsOutput struct {
	Body struct {
		Repayments []RepaymentBody `json:"repayments" doc:"Oldest first."`
		NextCursor string          `json:"next_cursor,omitempty"`
	}
}

func (h *handlers) registerLending(api huma.API) {
	tags := []string{"Lending"}
	huma.Register(api, huma.Operation{OperationID: "put-credit-line", Method: http.MethodPut, Path: "/v1/credit-lines/{borrower_id}", Summary: "Create or update a borrower's credit line", Tags: tags,
		Description: "Creates the line (201) or sets its limit and frozen flag (200). The currency is fixed for life (another is 409 conflict). " +
			"The limit may be lowered below used_minor: available becomes 0 and nothing is clawed back.",
		DefaultStatus: http.StatusCreated,
		Metadata:      answers(codes(riverbank.ECONFLICT), map[int]string{http.StatusOK: "The line existed: its limit and frozen flag are set."})}, h.putCreditLine)
	huma.Register(api, huma.Operation{OperationID: "get-credit-line", Method: http.MethodGet, Path: "/v1/credit-lines/{borrower_id}", Summary: "Get a credit line with what is used and available", Tags: tags,
		Metadata: answers(codes(riverbank.ENOTFOUND), nil)}, h.getCreditLine)
	huma.Register(api, huma.Operation{OperationID: "create-loan", Method: http.MethodPost, Path: "/v1/loans", Summary: "Grant a loan", Tags: tags,
		Description: "In one transaction: takes the principal from the borrower's credit line with a conditional update that can never pass the limit " +
			"(409 insufficient_credit when the line is missing, frozen or short), inserts the loan ACTIVE and posts the disbursement (debit loans:principal, credit platform:cash). " +
			"201 with the loan; 200 with the original loan for a repeat of the same request; another request with the same loan_no is 409 idempotency_conflict.",
		DefaultStatus: http.StatusCreated,
		Metadata: answers(codes(riverbank.EINSUFFICIENTCREDIT, riverbank.EIDEMPOTENCYCONFLICT, riverbank.EDATENOTOPEN, riverbank.EBALANCEOUTOFRANGE),
			replayOK("the original loan as it is now"))}, h.createLoan)
	huma.Register(api, huma.Operation{OperationID: "list-loans", Method: http.MethodGet, Path: "/v1/loans", Summary: "List loans, newest first", Tags: tags}, h.listLoans)
	huma.Register(api, huma.Operation{OperationID: "get-loan", Method: http.MethodGet, Path: "/v1/loans/{id}", Summary: "Get a loan with what it owes", Tags: tags,
		Metadata: answers(codes(riverbank.ENOTFOUND), nil)}, h.getLoan)
	huma.Register(api, huma.Operation{OperationID: "create-repayment", Method: http.MethodPost, Path: "/v1/loans/{id}/repayments", Summary: "Repay a loan", Tags: tags,
		Description: "In one transaction: locks the loan, allocates the amount in the payer's order, updates what the loan owes (REPAID when nothing is left), " +
			"posts the entry (debit platform:cash, credit each receivable paid) and enqueues credit.restore for the principal part. " +
			"201 with the repayment; 200 for a repeat of the same request; another request with the same identifier is 409 idempotency_conflict.",
		DefaultStatus: http.StatusCreated,
		Metadata: answers(codes(riverbank.ENOTFOUND, riverbank.EIDEMPOTENCYCONFLICT, riverbank.EDATENOTOPEN, riverbank.EOVERPAYMENT, riverbank.EBALANCEOUTOFRANGE),
			replayOK("the original repayment, with the loan as it is now"))}, h.createRepayment)
	huma.Register(api, huma.Operation{OperationID: "list-repayments", Method: http.MethodGet, Path: "/v1/loans/{id}/repayments", Summary: "A loan's repayments, oldest first", Tags: tags,
		Metadata: answers(codes(riverbank.ENOTFOUND), nil)}, h.listRepayments)
}

func (h *handlers) putCreditLine(ctx context.Context, in *putCreditLineInput) (*creditLineOutput, error) {
	c, created, err := h.Lending.PutCreditLine(ctx, lending.CreditLineInput{BorrowerID: in.BorrowerID, LimitMinor: in.Body.LimitMinor, Currency: in.Body.Currency, Frozen: in.Body.Frozen})
	if err != nil {
		return nil, err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return &creditLineOutput{Status: status, Body: creditLineBody(c)}, nil
}

func (h *handlers) getCreditLine(ctx context.Context, in *borrowerInput) (*creditLineOutput, error) {
	c, err := h.Lending.GetCreditLine(ctx, in.BorrowerID)
	if err != nil {
		return nil, err
	}
	return &creditLineOutput{Status: http.StatusOK, Body: creditLineBody(c)}, nil
}

func (h *handlers) createLoan(ctx context.Context, in *createLoanInput) (*loanOutput, error) {
	b := in.Body
	l, created, err := h.Lending.CreateLoan(ctx, lending.LoanInput{
		LoanNo: b.LoanNo, BorrowerID: b.BorrowerID, Currency: b.Currency, PrincipalMinor: b.PrincipalMinor,
		AnnualRateBps: b.AnnualRateBps, PenaltyRateBps: b.PenaltyRateBps, LateFeeMinor: b.LateFeeMinor,
		StartDate: b.StartDate, DueDate: b.DueDate, InterestMode: b.InterestMode, DealerID: b.DealerID,
		ManufacturerID: b.ManufacturerID, ManufacturerShareBps: b.ManufacturerShareBps,
	})
	if err != nil {
		return nil, err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return &loanOutput{Status: status, Body: loanBody(l)}, nil
}

func (h *handlers) getLoan(ctx context.Context, in *loanIDInput) (*loanOutput, error) {
	l, err := h.Lending.GetLoan(ctx, in.ID)
	if err != nil {
		return nil, err
	}
	body := []LoanBody{loanBody(l)}
	if err := h.withCases(ctx, body); err != nil {
		return nil, err
	}
	return &loanOutput{Status: http.StatusOK, Body: body[0]}, nil
}

func (h *handlers) listLoans(ctx context.Context, in *listLoansInput) (*listLoansOutput, error) {
	var before int64
	if in.Cursor != "" {
		var err error
		if before, err = decodeIDCursor(in.Cursor); err != nil {
			return nil, err
		}
	}
	limit := in.limit()
	loans, err := h.Lending.ListLoans(ctx, lending.LoanFilter{BorrowerID: in.BorrowerID, Status: in.Status, BeforeID: before, Limit: limit})
	if err != nil {
		return nil, err
	}
	out := &listLoansOutput{}
	out.Body.Loans = make([]LoanBody, len(loans))
	for i, l := range loans {
		out.Body.Loans[i] = loanBody(l)
	}
	if err := h.withCases(ctx, out.Body.Loans); err != nil {
		return nil, err
	}
	if len(loans) == limit {
		out.Body.NextCursor = encodeIDCursor(loans[len(loans)-1].ID)
	}
	return out, nil
}

func (h *handlers) createRepayment(ctx context.Context, in *createRepaymentInput) (*repaymentOutput, error) {
	r, created, err := h.Lending.Repay(ctx, lending.RepaymentInput{LoanID: in.ID, Identifier: in.Body.Identifier, Payer: in.Body.Payer, AmountMinor: in.Body.AmountMinor, ValueDate: in.Body.ValueDate})
	if err != nil {
		return nil, err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return &repaymentOutput{Status: status, Body: repaymentBody(r)}, nil
}

func (h *handlers) listRepayments(ctx context.Context, in *listRepaymentsInput) (*listRepaymentsOutput, error) {
	var after int64
	if in.Cursor != "" {
		var err error
		if after, err = decodeIDCursor(in.Cursor); err != nil {
			return nil, err
		}
	}
	limit := in.limit()
	reps, err := h.Lending.ListRepayments(ctx, in.ID, after, limit)
	if err != nil {
		return nil, err
	}
	out := &listRepaymentsOutput{}
	out.Body.Repayments = make([]RepaymentBody, len(reps))
	for i, r := range reps {
		out.Body.Repayments[i] = repaymentBody(r)
	}
	if len(reps) == limit {
		out.Body.NextCursor = encodeIDCursor(reps[len(reps)-1].ID)
	}
	return out, nil
}
