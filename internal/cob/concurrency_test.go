package cob_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/lending"
	"riverbank/internal/lending/rules"
)

// TestRepaymentRacingTheClose: repayments value-dated D race the chunks
// that close D. Each is either committed before its loan's chunk locks
// the loan, and then D's interest is on the principal after it, or
// refused with date_not_open; never accepted and missed.
func TestRepaymentRacingTheClose(t *testing.T) {
	t.Parallel()
	b := setup(t, setupOpts{ChunkSize: 4})
	b.creditLine(t, "b1", "CNY")
	const loans = 12
	ids := make([]int64, loans)
	for i := range ids {
		ids[i] = b.loan(t, dealerLoan(fmt.Sprintf("L%d", i), p10k, rate, "2024-04-01", "2024-12-31")).ID
	}
	b.closeDate(t, day("2024-04-01"))
	before := make([]int64, loans)
	for i, id := range ids {
		before[i] = b.getLoan(t, id).InterestDealerAccruedMinor
	}

	date := day("2024-04-02")
	b.start(t, date)
	chunks := b.chunks(t, date)
	require.Len(t, chunks, 3)

	var (
		wg                sync.WaitGroup
		mu                sync.Mutex
		accepted, refused int
		errs              []error
	)
	for g := range 24 {
		wg.Go(func() {
			time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
			_, _, err := b.Services.Lending.Repay(b.Ctx, lendingRepayment(ids[g%loans], fmt.Sprintf("r%d", g), "DEALER", 1_000_000, fmtDay(date)))
			mu.Lock()
			defer mu.Unlock()
			switch riverbank.ErrorCode(err) {
			case "":
				accepted++
			case riverbank.EDATENOTOPEN:
				refused++
			default:
				errs = append(errs, err)
			}
		})
	}
	for _, c := range chunks {
		wg.Go(func() {
			time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
			_, err := b.Services.COB.RunChunk(b.Ctx, c)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	require.Empty(t, errs)
	require.Equal(t, 24, accepted+refused)
	t.Logf("%d repayments accepted, %d refused", accepted, refused)
	require.Equal(t, db.CobRunStatusCOMPLETED, b.getRun(t, date).Status)

	for i, id := range ids {
		reps, err := b.Services.Lending.ListRepayments(b.Ctx, id, 0, 100)
		require.NoError(t, err)
		p := int64(p10k)
		for _, r := range reps {
			require.Equal(t, date, r.ValueDate)
			p -= r.PrincipalMinor
		}
		l := b.getLoan(t, id)
		require.Equal(t, p, l.PrincipalOutstandingMinor)
		require.Equal(t, rules.DailyInterest(p, rate), l.InterestDealerAccruedMinor-before[i],
			"loan %d: D's interest is on the principal after every repayment accepted for D (%d of them)", id, len(reps))
		require.Equal(t, lending.StatusActive, string(l.Status))
	}
}
