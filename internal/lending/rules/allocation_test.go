package rules_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/lending/rules"
)

// full is a loan with every component outstanding and distinct amounts, so a
// wrong component in an allocation shows up as a wrong number.
var full = rules.Outstanding{
	PenaltyMinor:              100,
	LateFeeMinor:              200,
	InterestDealerMinor:       300,
	InterestManufacturerMinor: 400,
	PrincipalMinor:            10_000,
}

func TestAllocate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		o      rules.Outstanding
		payer  rules.Payer
		amount int64
		want   rules.Allocation
	}{
		{"DealerPaysPenaltyFirst", full, rules.PayerDealer, 60,
			rules.Allocation{PenaltyMinor: 60}},
		{"DealerClearsPenaltyExactly", full, rules.PayerDealer, 100,
			rules.Allocation{PenaltyMinor: 100}},
		{"DealerPaysLateFeeAfterPenalty", full, rules.PayerDealer, 150,
			rules.Allocation{PenaltyMinor: 100, LateFeeMinor: 50}},
		{"DealerClearsLateFeeExactly", full, rules.PayerDealer, 300,
			rules.Allocation{PenaltyMinor: 100, LateFeeMinor: 200}},
		{"DealerPaysInterestAfterFees", full, rules.PayerDealer, 450,
			rules.Allocation{PenaltyMinor: 100, LateFeeMinor: 200, InterestDealerMinor: 150}},
		{"DealerClearsInterestExactly", full, rules.PayerDealer, 600,
			rules.Allocation{PenaltyMinor: 100, LateFeeMinor: 200, InterestDealerMinor: 300}},
		{"DealerPaysPrincipalLast", full, rules.PayerDealer, 601,
			rules.Allocation{PenaltyMinor: 100, LateFeeMinor: 200, InterestDealerMinor: 300, PrincipalMinor: 1}},
		{"DealerPaysExactlyOwed", full, rules.PayerDealer, 10_600,
			rules.Allocation{PenaltyMinor: 100, LateFeeMinor: 200, InterestDealerMinor: 300, PrincipalMinor: 10_000}},
		{"DealerSkipsClearedComponents", rules.Outstanding{LateFeeMinor: 5, PrincipalMinor: 50}, rules.PayerDealer, 20,
			rules.Allocation{LateFeeMinor: 5, PrincipalMinor: 15}},
		{"DealerNeverPaysManufacturerInterest", rules.Outstanding{InterestManufacturerMinor: 400, PrincipalMinor: 10}, rules.PayerDealer, 10,
			rules.Allocation{PrincipalMinor: 10}},
		{"ManufacturerPaysOnlyItsInterestPartly", full, rules.PayerManufacturer, 1,
			rules.Allocation{InterestManufacturerMinor: 1}},
		{"ManufacturerPaysExactlyOwed", full, rules.PayerManufacturer, 400,
			rules.Allocation{InterestManufacturerMinor: 400}},
		{"SplitLoanDealerPaysOnlyDealerInterest",
			rules.Outstanding{InterestDealerMinor: 7, InterestManufacturerMinor: 3, PrincipalMinor: 90}, rules.PayerDealer, 8,
			rules.Allocation{InterestDealerMinor: 7, PrincipalMinor: 1}},
		{"SplitLoanManufacturerPaysOnlyManufacturerInterest",
			rules.Outstanding{InterestDealerMinor: 7, InterestManufacturerMinor: 3, PrincipalMinor: 90}, rules.PayerManufacturer, 3,
			rules.Allocation{InterestManufacturerMinor: 3}},
		{"HugeBalancesDoNotOverflow",
			rules.Outstanding{PenaltyMinor: math.MaxInt64, LateFeeMinor: math.MaxInt64, InterestDealerMinor: math.MaxInt64, PrincipalMinor: math.MaxInt64},
			rules.PayerDealer, math.MaxInt64, rules.Allocation{PenaltyMinor: math.MaxInt64}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := rules.SeedOrder.Allocate(tt.o, tt.payer, tt.amount)
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
			require.Equal(t, tt.amount, got.Total())

			// Paying never touches the other payer's components and never
			// leaves anything negative.
			after := tt.o.Sub(got)
			require.NoError(t, after.Validate())
			switch tt.payer {
			case rules.PayerDealer:
				require.Equal(t, tt.o.InterestManufacturerMinor, after.InterestManufacturerMinor)
			case rules.PayerManufacturer:
				require.Equal(t, tt.o.PenaltyMinor, after.PenaltyMinor)
				require.Equal(t, tt.o.LateFeeMinor, after.LateFeeMinor)
				require.Equal(t, tt.o.InterestDealerMinor, after.InterestDealerMinor)
				require.Equal(t, tt.o.PrincipalMinor, after.PrincipalMinor)
			}
		})
	}
}

func TestAllocateRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		o        rules.Outstanding
		payer    rules.Payer
		amount   int64
		code     string
		message  string
		owed     any // detail owed_minor, nil when absent
		contains string
	}{
		{name: "DealerOverpaysByOne", o: full, payer: rules.PayerDealer, amount: 10_601,
			code: riverbank.EOVERPAYMENT, message: "amount_minor 10601 is more than the DEALER owes (10600)", owed: int64(10_600)},
		{name: "ManufacturerOverpaysByOne", o: full, payer: rules.PayerManufacturer, amount: 401,
			code: riverbank.EOVERPAYMENT, message: "amount_minor 401 is more than the MANUFACTURER owes (400)", owed: int64(400)},
		{name: "OverpaysTheDocumentedExample", o: rules.Outstanding{PrincipalMinor: 300}, payer: rules.PayerDealer, amount: 500,
			code: riverbank.EOVERPAYMENT, message: "amount_minor 500 is more than the DEALER owes (300)", owed: int64(300)},
		{name: "ManufacturerOwesNothingOnDealerLoan", o: rules.Outstanding{InterestDealerMinor: 5, PrincipalMinor: 5}, payer: rules.PayerManufacturer, amount: 1,
			code: riverbank.EOVERPAYMENT, message: "amount_minor 1 is more than the MANUFACTURER owes (0)", owed: int64(0)},
		{name: "PaidOffLoanTakesNothing", o: rules.Outstanding{}, payer: rules.PayerDealer, amount: 1,
			code: riverbank.EOVERPAYMENT, owed: int64(0)},
		{name: "ZeroAmount", o: full, payer: rules.PayerDealer, amount: 0,
			code: riverbank.EINVALID, contains: "must be positive"},
		{name: "NegativeAmount", o: full, payer: rules.PayerDealer, amount: -1,
			code: riverbank.EINVALID, contains: "must be positive"},
		{name: "MinInt64Amount", o: full, payer: rules.PayerDealer, amount: math.MinInt64,
			code: riverbank.EINVALID, contains: "must be positive"},
		{name: "UnknownPayerNamesAllowedPayers", o: full, payer: "BANK", amount: 1,
			code: riverbank.EINVALID, message: `payer "BANK" is not one of DEALER, MANUFACTURER`},
		{name: "EmptyPayer", o: full, payer: "", amount: 1,
			code: riverbank.EINVALID, contains: "DEALER, MANUFACTURER"},
		{name: "LowerCasePayer", o: full, payer: "dealer", amount: 1,
			code: riverbank.EINVALID, contains: "DEALER, MANUFACTURER"},
		{name: "NegativeOutstandingIsInternal", o: rules.Outstanding{PrincipalMinor: 10, LateFeeMinor: -1}, payer: rules.PayerDealer, amount: 1,
			code: riverbank.EINTERNAL, contains: "late_fee_minor -1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := rules.SeedOrder.Allocate(tt.o, tt.payer, tt.amount)
			require.Error(t, err)
			require.Zero(t, got)
			require.Equal(t, tt.code, riverbank.ErrorCode(err), "error: %v", err)
			if tt.code == riverbank.EINTERNAL {
				require.ErrorContains(t, err, tt.contains)
				return
			}
			var de *riverbank.Error
			require.True(t, errors.As(err, &de))
			if tt.message != "" {
				require.Equal(t, tt.message, de.Message)
			}
			require.Contains(t, de.Message, tt.contains)
			if tt.owed != nil {
				require.Equal(t, tt.owed, de.Details["owed_minor"])
			} else {
				require.NotContains(t, de.Details, "owed_minor")
			}
		})
	}
}

func TestOwed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		o     rules.Outstanding
		payer rules.Payer
		want  int64
	}{
		{"DealerOwesEverythingButManufacturerInterest", full, rules.PayerDealer, 10_600},
		{"ManufacturerOwesOnlyItsInterest", full, rules.PayerManufacturer, 400},
		{"UnknownPayerOwesNothing", full, "BANK", 0},
		{"PaidOffLoanOwesNothing", rules.Outstanding{}, rules.PayerDealer, 0},
		{"SumSaturatesInsteadOfWrapping",
			rules.Outstanding{PenaltyMinor: math.MaxInt64, PrincipalMinor: math.MaxInt64}, rules.PayerDealer, math.MaxInt64},
		{"NegativeFieldCountsAsZero", rules.Outstanding{PenaltyMinor: -5, PrincipalMinor: 10}, rules.PayerDealer, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, rules.SeedOrder.Owed(tt.o, tt.payer))
		})
	}
}

func TestStrategyValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		s        rules.Strategy
		contains string // "" when valid
	}{
		{"SeedOrderIsValid", rules.SeedOrder, ""},
		{"PrincipalFirstIsValid", rules.Strategy{Name: "principal-first", Orders: map[rules.Payer][]rules.Component{
			rules.PayerDealer: {rules.ComponentPrincipal, rules.ComponentInterestDealer, rules.ComponentPenalty, rules.ComponentLateFee},
		}}, ""},
		{"EmptyName", rules.Strategy{Orders: rules.SeedOrder.Orders}, "empty name"},
		{"NoPayers", rules.Strategy{Name: "x"}, "no payers"},
		{"PayerWithEmptyOrder", rules.Strategy{Name: "x", Orders: map[rules.Payer][]rules.Component{rules.PayerDealer: nil}}, "pays nothing"},
		{"ZeroComponent", rules.Strategy{Name: "x", Orders: map[rules.Payer][]rules.Component{rules.PayerDealer: {0}}}, "unknown Component(0)"},
		{"OutOfRangeComponent", rules.Strategy{Name: "x", Orders: map[rules.Payer][]rules.Component{rules.PayerDealer: {99}}}, "unknown Component(99)"},
		{"DuplicateComponent", rules.Strategy{Name: "x", Orders: map[rules.Payer][]rules.Component{
			rules.PayerDealer: {rules.ComponentPrincipal, rules.ComponentPrincipal},
		}}, "principal listed twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.s.Validate()
			if tt.contains == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.contains)
			_, err = tt.s.Allocate(full, rules.PayerDealer, 1)
			require.ErrorContains(t, err, tt.contains, "Allocate must refuse an invalid strategy")
			require.Equal(t, riverbank.EINTERNAL, riverbank.ErrorCode(err))
		})
	}
}

func TestStrategyIsATable(t *testing.T) {
	t.Parallel()
	t.Run("PrincipalFirstOrderNeedsNoCodeChange", func(t *testing.T) {
		t.Parallel()
		s := rules.Strategy{Name: "principal-first", Orders: map[rules.Payer][]rules.Component{
			rules.PayerDealer:       {rules.ComponentPrincipal, rules.ComponentInterestDealer, rules.ComponentPenalty, rules.ComponentLateFee},
			rules.PayerManufacturer: {rules.ComponentInterestManufacturer},
		}}
		got, err := s.Allocate(full, rules.PayerDealer, 10_050)
		require.NoError(t, err)
		require.Equal(t, rules.Allocation{PrincipalMinor: 10_000, InterestDealerMinor: 50}, got)
	})
	t.Run("SeedOrderHasTheDocumentedOrder", func(t *testing.T) {
		t.Parallel()
		require.Equal(t, "seed", rules.SeedOrder.Name)
		require.Equal(t, map[rules.Payer][]rules.Component{
			rules.PayerDealer:       {rules.ComponentPenalty, rules.ComponentLateFee, rules.ComponentInterestDealer, rules.ComponentPrincipal},
			rules.PayerManufacturer: {rules.ComponentInterestManufacturer},
		}, rules.SeedOrder.Orders)
	})
}

func TestComponentString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		c    rules.Component
		want string
	}{
		{rules.ComponentPenalty, "penalty"},
		{rules.ComponentLateFee, "late_fee"},
		{rules.ComponentInterestDealer, "interest_dealer"},
		{rules.ComponentInterestManufacturer, "interest_manufacturer"},
		{rules.ComponentPrincipal, "principal"},
		{0, "Component(0)"},
		{42, "Component(42)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, tt.c.String())
		})
	}
}

func TestAllocationSums(t *testing.T) {
	t.Parallel()
	a := rules.Allocation{PenaltyMinor: 1, LateFeeMinor: 2, InterestDealerMinor: 4, InterestManufacturerMinor: 8, PrincipalMinor: 16}
	tests := []struct {
		name string
		got  func() int64
		want int64
	}{
		{"TotalAddsEveryPart", a.Total, 31},
		{"InterestAddsBothPayersInterest", a.InterestMinor, 12},
		{"ZeroAllocationTotalsZero", rules.Allocation{}.Total, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, tt.got())
		})
	}
	t.Run("TotalPanicsInsteadOfWrapping", func(t *testing.T) {
		t.Parallel()
		require.Panics(t, func() { rules.Allocation{PenaltyMinor: math.MaxInt64, PrincipalMinor: 1}.Total() })
		require.Panics(t, func() {
			rules.Allocation{InterestDealerMinor: math.MaxInt64, InterestManufacturerMinor: 1}.InterestMinor()
		})
	})
}

func TestOutstandingSub(t *testing.T) {
	t.Parallel()
	t.Run("SubtractsEachComponent", func(t *testing.T) {
		t.Parallel()
		got := full.Sub(rules.Allocation{PenaltyMinor: 1, LateFeeMinor: 2, InterestDealerMinor: 3, InterestManufacturerMinor: 4, PrincipalMinor: 5})
		require.Equal(t, rules.Outstanding{PenaltyMinor: 99, LateFeeMinor: 198, InterestDealerMinor: 297, InterestManufacturerMinor: 396, PrincipalMinor: 9_995}, got)
		require.False(t, got.IsZero())
	})
	t.Run("PayingEverythingIsZero", func(t *testing.T) {
		t.Parallel()
		got := full.Sub(rules.Allocation{PenaltyMinor: 100, LateFeeMinor: 200, InterestDealerMinor: 300, InterestManufacturerMinor: 400, PrincipalMinor: 10_000})
		require.True(t, got.IsZero())
	})
	panics := []struct {
		name string
		a    rules.Allocation
	}{
		{"PayingMoreThanOutstandingPanics", rules.Allocation{LateFeeMinor: 201}},
		{"NegativePaymentPanics", rules.Allocation{PrincipalMinor: -1}},
		{"MinInt64PaymentPanics", rules.Allocation{PenaltyMinor: math.MinInt64}},
	}
	for _, tt := range panics {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Panics(t, func() { full.Sub(tt.a) })
		})
	}
}

func TestOutstandingIsZero(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		o    rules.Outstanding
		want bool
	}{
		{"EmptyLoanIsZero", rules.Outstanding{}, true},
		{"PrincipalLeftIsNotZero", rules.Outstanding{PrincipalMinor: 1}, false},
		{"ManufacturerInterestLeftIsNotZero", rules.Outstanding{InterestManufacturerMinor: 1}, false},
		{"LateFeeLeftIsNotZero", rules.Outstanding{LateFeeMinor: 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, tt.o.IsZero())
		})
	}
}

// TestAllocateProperties repays random loans with random amounts and checks
// the invariants: every allocation sums to its amount, no outstanding field
// ever goes negative, the other payer's components are never touched, and
// repaying exactly what each payer owes closes the loan. The seed is fixed
// so a failure reproduces; it is printed with every failure.
func TestAllocateProperties(t *testing.T) {
	t.Parallel()
	const (
		seed       = 20260301
		iterations = 10_000
		maxMinor   = 1_000_000_000_000_000 // 10^15, the largest amount in practice
	)
	r := rand.New(rand.NewPCG(seed, seed))
	// amount is 0 a fifth of the time, small a fifth, and up to 10^15
	// otherwise, so cleared components and exact boundaries come up often.
	amount := func() int64 {
		switch r.IntN(5) {
		case 0:
			return 0
		case 1:
			return r.Int64N(10) + 1
		default:
			return r.Int64N(maxMinor) + 1
		}
	}
	payers := []rules.Payer{rules.PayerDealer, rules.PayerManufacturer}
	for i := range iterations {
		o := rules.Outstanding{
			PrincipalMinor:            amount(),
			InterestDealerMinor:       amount(),
			InterestManufacturerMinor: amount(),
			PenaltyMinor:              amount(),
			LateFeeMinor:              amount(),
		}
		msg := []any{"seed %d iteration %d outstanding %+v", seed, i, o}
		for range r.IntN(6) {
			p := payers[r.IntN(len(payers))]
			owed := rules.SeedOrder.Owed(o, p)
			if owed == 0 {
				continue
			}
			n := r.Int64N(owed) + 1
			if r.IntN(4) == 0 {
				n = owed
			}
			a, err := rules.SeedOrder.Allocate(o, p, n)
			require.NoError(t, err, msg...)
			require.Equal(t, n, a.Total(), msg...)
			next := o.Sub(a)
			require.NoError(t, next.Validate(), msg...)
			require.Equal(t, owed-n, rules.SeedOrder.Owed(next, p), msg...)
			other := payers[0]
			if p == other {
				other = payers[1]
			}
			require.Equal(t, rules.SeedOrder.Owed(o, other), rules.SeedOrder.Owed(next, other), msg...)
			o = next
		}
		for _, p := range payers {
			owed := rules.SeedOrder.Owed(o, p)
			if owed == 0 {
				continue
			}
			_, err := rules.SeedOrder.Allocate(o, p, owed+1)
			require.Equal(t, riverbank.EOVERPAYMENT, riverbank.ErrorCode(err), msg...)
			a, err := rules.SeedOrder.Allocate(o, p, owed)
			require.NoError(t, err, msg...)
			require.Equal(t, owed, a.Total(), msg...)
			o = o.Sub(a)
			require.NoError(t, o.Validate(), msg...)
		}
		require.True(t, o.IsZero(), msg...)
	}
}

func TestOutstandingValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		o        rules.Outstanding
		contains string // "" when valid
	}{
		{"ZeroLoanIsValid", rules.Outstanding{}, ""},
		{"PositiveLoanIsValid", full, ""},
		{"NegativePrincipal", rules.Outstanding{PrincipalMinor: -1}, "negative principal_minor -1"},
		{"NegativeDealerInterest", rules.Outstanding{InterestDealerMinor: -2}, "negative interest_dealer_minor -2"},
		{"NegativeManufacturerInterest", rules.Outstanding{InterestManufacturerMinor: -3}, "negative interest_manufacturer_minor -3"},
		{"NegativePenalty", rules.Outstanding{PenaltyMinor: -4}, "negative penalty_minor -4"},
		{"NegativeLateFee", rules.Outstanding{LateFeeMinor: math.MinInt64}, "negative late_fee_minor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.o.Validate()
			if tt.contains == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.contains)
			require.Equal(t, riverbank.EINTERNAL, riverbank.ErrorCode(err))
		})
	}
}
