package cob_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/internal/cob"
	"riverbank/internal/collection"
	"riverbank/internal/db"
	"riverbank/internal/lending"
	"riverbank/internal/testdb"
	"riverbank/internal/testkit"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func TestSmokeRunClosesLoans(t *testing.T) {
	t.Parallel()
	k := testkit.DB(t, testkit.DBOptions{})
	client := k.Client(t, nil)
	testkit.Start(t, client)
	svc := k.Services
	_, _, err := svc.Lending.PutCreditLine(k.Ctx, lending.CreditLineInput{BorrowerID: "b1", LimitMinor: 1_000_000_000, Currency: "CNY"})
	require.NoError(t, err)
	l, _, err := svc.Lending.CreateLoan(k.Ctx, lending.LoanInput{LoanNo: "L1", BorrowerID: "b1", Currency: "CNY", PrincipalMinor: 36_500_000,
		AnnualRateBps: 1000, PenaltyRateBps: 500, StartDate: "2026-01-01", DueDate: "2026-01-10", InterestMode: "SPLIT", DealerID: "d1", ManufacturerID: "m1", ManufacturerShareBps: 3000})
	require.NoError(t, err)
	for d := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC); d.Before(time.Date(2026, 1, 13, 0, 0, 0, 0, time.UTC)); d = d.AddDate(0, 0, 1) {
		run, created, err := svc.COB.Start(k.Ctx, d)
		require.NoError(t, err)
		require.True(t, created)
		testkit.WaitFor(t, 10*time.Second, "run "+d.Format("2006-01-02"), func() bool {
			r, err := svc.COB.Get(k.Ctx, d)
			require.NoError(t, err)
			return r.Status == db.CobRunStatusCOMPLETED
		})
		_ = run
	}
	got, err := svc.Lending.GetLoan(k.Ctx, l.ID)
	require.NoError(t, err)
	// 12 days of 10,000 interest (36.5M × 10% / 365), 30% manufacturer.
	require.EqualValues(t, 12*7000, got.InterestOutstandingDealerMinor)
	require.EqualValues(t, 12*3000, got.InterestOutstandingManufacturerMinor)
	require.Equal(t, "OVERDUE", string(got.Status))
	// Penalty on 11, 12 Jan: principal × 5% / 365 = 5000 per day.
	require.EqualValues(t, 2*5000, got.PenaltyOutstandingMinor)
	testkit.WaitFor(t, 10*time.Second, "case", func() bool {
		cs, err := svc.Collection.List(k.Ctx, collectionFilter("b1"))
		require.NoError(t, err)
		return len(cs) == 1 && cs[0].ItemCount == 1
	})
	testkit.WaitFor(t, 10*time.Second, "trial balance", func() bool {
		r, err := svc.COB.Get(k.Ctx, time.Date(2026, 1, 12, 0, 0, 0, 0, time.UTC))
		require.NoError(t, err)
		return len(r.TrialBalance) > 0
	})
	r, err := svc.COB.Get(k.Ctx, time.Date(2026, 1, 12, 0, 0, 0, 0, time.UTC))
	require.NoError(t, err)
	require.Contains(t, string(r.TrialBalance), `"balanced": true`, string(r.TrialBalance))
	_ = cob.DefaultChunkSize
}

func collectionFilter(b string) collection.Filter { return collection.Filter{BorrowerID: b, Limit: 10} }
