package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/api"
	"riverbank/internal/testkit"
)

type casesPage struct {
	Cases      []api.CaseBody `json:"cases"`
	NextCursor string         `json:"next_cursor"`
}

func (b *cobAPIBundle) casesPage(t *testing.T, query string) casesPage {
	t.Helper()
	rec := b.api.Get("/v1/cases?" + query)
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	return testkit.DecodeJSON[casesPage](t, rec)
}

func (b *cobAPIBundle) getLoanBody(t *testing.T, id int64) api.LoanBody {
	t.Helper()
	rec := b.api.Get(fmt.Sprintf("/v1/loans/%d", id))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	return testkit.DecodeJSON[api.LoanBody](t, rec)
}

// Loans overdue through close of business land in one case per borrower:
// GET /v1/cases/{id} has the documented shape, the loans show their case
// while in collection, and repaying them closes the case and clears it.
func TestCasesAPIFromCloseOfBusiness(t *testing.T) {
	t.Parallel()
	b := setupCOBAPI(t)
	l1 := b.cobLoan(t, "b1", "L1", 36_500_000, "2026-01-01", "2026-01-02")
	l2 := b.cobLoan(t, "b1", "L2", 73_000_000, "2026-01-01", "2026-01-03")
	other := b.cobLoan(t, "b2", "O1", 1_000_000, "2026-01-01", "2026-02-01")
	b.startWorkers(t)
	b.closeDates(t, "2026-01-01", "2026-01-04")

	var caseID int64
	testkit.WaitFor(t, 20*time.Second, "b1's case with both loans", func() bool {
		p := b.casesPage(t, "borrower_id=b1")
		if len(p.Cases) != 1 || p.Cases[0].ItemCount != 2 {
			return false
		}
		caseID = p.Cases[0].ID
		return true
	})

	rec := b.api.Get(fmt.Sprintf("/v1/cases/%d", caseID))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	raw := testkit.DecodeJSON[map[string]any](t, rec)
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	require.Equal(t, []string{"borrower_id", "closed_at", "id", "item_count", "loans", "max_days_past_due", "opened_at", "overdue_totals", "status"}, keys,
		"fields of a case")
	require.Nil(t, raw["closed_at"], "closed_at is null while open")
	loans := raw["loans"].([]any)
	require.Len(t, loans, 2)
	loan0 := loans[0].(map[string]any)
	for _, k := range []string{"loan_id", "loan_no", "currency", "status", "days_past_due", "outstanding_minor", "overdue_since"} {
		require.Contains(t, loan0, k)
	}
	require.NotContains(t, loan0, "resolved_at")
	totals := raw["overdue_totals"].([]any)
	require.Len(t, totals, 1)
	require.Equal(t, map[string]any{"currency": "CNY", "amount_minor": totals[0].(map[string]any)["amount_minor"]}, totals[0])

	c := testkit.DecodeJSON[api.CaseBody](t, rec)
	require.Equal(t, "b1", c.BorrowerID)
	require.Equal(t, "OPEN", c.Status)
	require.Equal(t, 2, c.ItemCount)
	// L1 is overdue on 01-03 and 01-04, L2 on 01-04.
	require.EqualValues(t, 2, c.MaxDaysPastDue)
	require.Equal(t, l1.ID, c.Loans[0].LoanID)
	require.Equal(t, "2026-01-03", c.Loans[0].OverdueSince)
	require.EqualValues(t, 2, c.Loans[0].DaysPastDue)
	require.Equal(t, l2.ID, c.Loans[1].LoanID)
	require.Equal(t, "2026-01-04", c.Loans[1].OverdueSince)
	require.EqualValues(t, 1, c.Loans[1].DaysPastDue)
	var owed int64
	for _, id := range []int64{l1.ID, l2.ID} {
		lb := b.getLoanBody(t, id)
		require.Equal(t, "OVERDUE", lb.Status)
		require.NotNil(t, lb.CaseID, "a loan in collection shows its case")
		require.Equal(t, caseID, *lb.CaseID)
		owed += lb.PrincipalOutstandingMinor + lb.InterestOutstandingDealerMinor + lb.PenaltyOutstandingMinor + lb.LateFeeOutstandingMinor
	}
	require.Equal(t, []api.CurrencyAmountBody{{Currency: "CNY", AmountMinor: owed}}, c.OverdueTotals)
	require.Nil(t, b.getLoanBody(t, other.ID).CaseID, "a loan not overdue has no case")

	// The list of loans shows case_id too.
	rec = b.api.Get("/v1/loans?borrower_id=b1")
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	list := testkit.DecodeJSON[struct {
		Loans []api.LoanBody `json:"loans"`
	}](t, rec)
	require.Len(t, list.Loans, 2)
	for _, lb := range list.Loans {
		require.NotNil(t, lb.CaseID)
		require.Equal(t, caseID, *lb.CaseID)
	}

	// Repaying L1 resolves it (case_id null, resolved_at set); repaying L2
	// too closes the case.
	for i, l := range []int64{l1.ID, l2.ID} {
		lb := b.getLoanBody(t, l)
		amount := lb.PrincipalOutstandingMinor + lb.InterestOutstandingDealerMinor + lb.PenaltyOutstandingMinor + lb.LateFeeOutstandingMinor
		rec := b.api.Post(fmt.Sprintf("/v1/loans/%d/repayments", l), map[string]any{"identifier": "full", "payer": "DEALER", "amount_minor": amount})
		require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
		lb = b.getLoanBody(t, l)
		require.Equal(t, "REPAID", lb.Status)
		require.Nil(t, lb.CaseID, "a repaid loan is out of collection")
		c := testkit.DecodeJSON[api.CaseBody](t, b.api.Get(fmt.Sprintf("/v1/cases/%d", caseID)))
		require.Len(t, c.Loans, 2)
		require.NotNil(t, c.Loans[i].ResolvedAt)
		if i == 0 {
			require.Equal(t, "OPEN", c.Status)
			require.Equal(t, 1, c.ItemCount)
			require.Nil(t, c.ClosedAt)
			continue
		}
		require.Equal(t, "CLOSED", c.Status)
		require.Zero(t, c.ItemCount)
		require.NotNil(t, c.ClosedAt)
		require.Empty(t, c.OverdueTotals)
		require.Zero(t, c.MaxDaysPastDue)
	}
	closed := b.casesPage(t, "status=CLOSED")
	require.Len(t, closed.Cases, 1)
	require.Equal(t, caseID, closed.Cases[0].ID)
	require.Empty(t, b.casesPage(t, "status=OPEN&borrower_id=b1").Cases)
}

// GET /v1/cases: newest first, filters, keyset pages; bad parameters are
// 422 and an unknown case 404.
func TestCasesAPIListAndErrors(t *testing.T) {
	t.Parallel()
	b := setupCOBAPI(t)
	borrowers := []string{"a", "b", "c", "d", "e"}
	for i, br := range borrowers {
		b.cobLoan(t, br, "L-"+br, 1_000_000*int64(i+1), "2026-01-01", "2026-01-02")
	}
	b.startWorkers(t)
	b.closeDates(t, "2026-01-01", "2026-01-03")
	testkit.WaitFor(t, 20*time.Second, "a case per borrower", func() bool {
		return len(b.casesPage(t, "status=OPEN").Cases) == len(borrowers)
	})

	all := b.casesPage(t, "")
	require.Len(t, all.Cases, 5)
	require.Empty(t, all.NextCursor)
	for i := 1; i < len(all.Cases); i++ {
		require.Greater(t, all.Cases[i-1].ID, all.Cases[i].ID, "newest first")
	}
	var ids []int64
	query := "limit=2"
	for range 5 {
		p := b.casesPage(t, query)
		for _, c := range p.Cases {
			ids = append(ids, c.ID)
		}
		if p.NextCursor == "" {
			break
		}
		query = "limit=2&cursor=" + url.QueryEscape(p.NextCursor)
	}
	want := make([]int64, len(all.Cases))
	for i, c := range all.Cases {
		want[i] = c.ID
	}
	require.Equal(t, want, ids)

	byC := b.casesPage(t, "borrower_id=c&status=OPEN")
	require.Len(t, byC.Cases, 1)
	require.Equal(t, "c", byC.Cases[0].BorrowerID)
	require.Equal(t, 1, byC.Cases[0].ItemCount)
	require.Equal(t, []api.CurrencyAmountBody{{Currency: "CNY", AmountMinor: byC.Cases[0].Loans[0].OutstandingMinor}}, byC.Cases[0].OverdueTotals)
	require.Empty(t, b.casesPage(t, "status=CLOSED").Cases)
	require.Empty(t, b.casesPage(t, "borrower_id=nobody").Cases)

	before := b.writes(t)
	for _, q := range []string{"status=BAD", "status=open", "limit=0", "limit=501", "cursor=bm9wZQ", "cursor=%21", "borrower_id=" + strings.Repeat("x", 65)} {
		testkit.RequireProblem(t, b.api.Get("/v1/cases?"+q), "validation_failed", http.StatusUnprocessableEntity)
	}
	testkit.RequireProblem(t, b.api.Get("/v1/cases/999999"), "not_found", http.StatusNotFound)
	for _, id := range []string{"0", "-1", "abc", "1.5"} {
		testkit.RequireProblem(t, b.api.Get("/v1/cases/"+id), "validation_failed", http.StatusUnprocessableEntity)
	}
	require.Equal(t, before, b.writes(t))
}

// GET /v1/loans/{id}/accruals: finished months from the history, then the
// month still accruing; 404 for an unknown loan.
func TestCOBAPILoanAccruals(t *testing.T) {
	t.Parallel()
	b := setupCOBAPI(t)
	// 36.5M at 10%: 10,000 a day.
	l := b.cobLoan(t, "b1", "L1", 36_500_000, "2026-01-30", "2026-03-30")

	type accruals struct {
		LoanID int64                  `json:"loan_id"`
		Months []api.MonthAccrualBody `json:"months"`
	}
	rec := b.api.Get(fmt.Sprintf("/v1/loans/%d/accruals", l.ID))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	got := testkit.DecodeJSON[accruals](t, rec)
	require.Equal(t, l.ID, got.LoanID)
	require.NotNil(t, got.Months)
	require.Empty(t, got.Months, "nothing accrued before the first close")

	b.startWorkers(t)
	b.closeDates(t, "2026-01-30", "2026-02-01")
	rec = b.api.Get(fmt.Sprintf("/v1/loans/%d/accruals", l.ID))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	raw := testkit.DecodeJSON[map[string]any](t, rec)
	require.Contains(t, raw, "loan_id")
	require.Contains(t, raw, "months")
	m0 := raw["months"].([]any)[0].(map[string]any)
	for _, k := range []string{"month", "interest_dealer_minor", "interest_manufacturer_minor", "penalty_minor", "late_fee_minor", "current"} {
		require.Contains(t, m0, k)
	}
	got = testkit.DecodeJSON[accruals](t, rec)
	require.Equal(t, []api.MonthAccrualBody{
		{Month: "2026-01", InterestDealerMinor: 20_000},
		{Month: "2026-02", InterestDealerMinor: 10_000, Current: true},
	}, got.Months)

	testkit.RequireProblem(t, b.api.Get("/v1/loans/999999/accruals"), "not_found", http.StatusNotFound)
	testkit.RequireProblem(t, b.api.Get("/v1/loans/0/accruals"), "validation_failed", http.StatusUnprocessableEntity)
	testkit.RequireProblem(t, b.api.Get("/v1/loans/abc/accruals"), "validation_failed", http.StatusUnprocessableEntity)
}
