package rules

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"riverbank"
)

// Outstanding is what a loan still owes, split by component, in minor units.
// Every field is non-negative in a valid loan; Validate checks that, because a
// negative balance would let a repayment be allocated to money nobody owes.
type Outstanding struct {
	// PrincipalMinor is the unpaid principal.
	PrincipalMinor int64
	// InterestDealerMinor is accrued interest the dealer must pay.
	InterestDealerMinor int64
	// InterestManufacturerMinor is accrued interest the manufacturer pays
	// (the manufacturer's share of a subsidised loan).
	InterestManufacturerMinor int64
	// PenaltyMinor is accrued penalty interest on overdue amounts.
	PenaltyMinor int64
	// LateFeeMinor is charged late fees.
	LateFeeMinor int64
}

// Payer is who makes a repayment. Each payer settles only its own components
// (see Strategy), so the payer, not the amount, decides where money goes.
type Payer string

// The payers of a loan. Their string values are stored and sent over the API,
// so they are stable.
const (
	// PayerDealer is the borrower: the dealer that holds the stock.
	PayerDealer Payer = "DEALER"
	// PayerManufacturer subsidises interest on loans whose interest mode
	// gives it a share.
	PayerManufacturer Payer = "MANUFACTURER"
)

// Component is one part of what a loan owes. The zero value is not a
// component, so a forgotten field in a Strategy is caught by Validate instead
// of silently meaning "penalty".
type Component int

// The components a repayment can settle.
const (
	// ComponentPenalty is Outstanding.PenaltyMinor.
	ComponentPenalty Component = iota + 1
	// ComponentLateFee is Outstanding.LateFeeMinor.
	ComponentLateFee
	// ComponentInterestDealer is Outstanding.InterestDealerMinor.
	ComponentInterestDealer
	// ComponentInterestManufacturer is Outstanding.InterestManufacturerMinor.
	ComponentInterestManufacturer
	// ComponentPrincipal is Outstanding.PrincipalMinor.
	ComponentPrincipal
)

// String returns the snake_case name used in logs and error messages, which
// matches the field names of the outstanding columns.
func (c Component) String() string {
	switch c {
	case ComponentPenalty:
		return "penalty"
	case ComponentLateFee:
		return "late_fee"
	case ComponentInterestDealer:
		return "interest_dealer"
	case ComponentInterestManufacturer:
		return "interest_manufacturer"
	case ComponentPrincipal:
		return "principal"
	default:
		return fmt.Sprintf("Component(%d)", int(c))
	}
}

func (c Component) valid() bool {
	return c >= ComponentPenalty && c <= ComponentPrincipal
}

// of returns the outstanding amount of component c.
func (o Outstanding) of(c Component) int64 {
	switch c {
	case ComponentPenalty:
		return o.PenaltyMinor
	case ComponentLateFee:
		return o.LateFeeMinor
	case ComponentInterestDealer:
		return o.InterestDealerMinor
	case ComponentInterestManufacturer:
		return o.InterestManufacturerMinor
	case ComponentPrincipal:
		return o.PrincipalMinor
	default:
		return 0
	}
}

// Validate reports a negative field. A negative outstanding is corrupt data,
// not a client mistake, so the error is a plain error (riverbank.EINTERNAL).
func (o Outstanding) Validate() error {
	for _, c := range allComponents {
		if v := o.of(c); v < 0 {
			return fmt.Errorf("validate outstanding: negative %s_minor %d", c, v)
		}
	}
	return nil
}

// Sub returns o with allocation a paid off. It panics if a field would go
// negative or overflow: an allocation from Allocate(o, ...) never does that,
// so either means the caller paired an allocation with the wrong loan, and
// persisting the result would corrupt the balance.
func (o Outstanding) Sub(a Allocation) Outstanding {
	return Outstanding{
		PrincipalMinor:            subPaid(ComponentPrincipal, o.PrincipalMinor, a.PrincipalMinor),
		InterestDealerMinor:       subPaid(ComponentInterestDealer, o.InterestDealerMinor, a.InterestDealerMinor),
		InterestManufacturerMinor: subPaid(ComponentInterestManufacturer, o.InterestManufacturerMinor, a.InterestManufacturerMinor),
		PenaltyMinor:              subPaid(ComponentPenalty, o.PenaltyMinor, a.PenaltyMinor),
		LateFeeMinor:              subPaid(ComponentLateFee, o.LateFeeMinor, a.LateFeeMinor),
	}
}

func subPaid(c Component, owed, paid int64) int64 {
	if paid < 0 || paid > owed {
		panic(fmt.Sprintf("rules: cannot pay %d of %s when %d is outstanding", paid, c, owed))
	}
	return owed - paid
}

// IsZero reports whether the loan owes nothing, which is when it can be
// closed.
func (o Outstanding) IsZero() bool {
	return o == Outstanding{}
}

// Allocation is how one repayment is split across components, in minor
// units. Its parts always sum to the repayment amount.
type Allocation struct {
	// PenaltyMinor goes to penalty interest.
	PenaltyMinor int64
	// LateFeeMinor goes to late fees.
	LateFeeMinor int64
	// InterestDealerMinor goes to the dealer's interest.
	InterestDealerMinor int64
	// InterestManufacturerMinor goes to the manufacturer's interest.
	InterestManufacturerMinor int64
	// PrincipalMinor goes to principal.
	PrincipalMinor int64
}

// Total returns the sum of the parts, which for an allocation from Allocate is
// the repayment amount. It panics on int64 overflow rather than return a
// wrapped total, which no allocation from Allocate can reach.
func (a Allocation) Total() int64 {
	return mustSum(a.PenaltyMinor, a.LateFeeMinor, a.InterestDealerMinor, a.InterestManufacturerMinor, a.PrincipalMinor)
}

// InterestMinor returns the interest paid by either payer, which the ledger
// books as one income line. It panics on int64 overflow, like Total.
func (a Allocation) InterestMinor() int64 {
	return mustSum(a.InterestDealerMinor, a.InterestManufacturerMinor)
}

func (a *Allocation) set(c Component, v int64) {
	switch c {
	case ComponentPenalty:
		a.PenaltyMinor = v
	case ComponentLateFee:
		a.LateFeeMinor = v
	case ComponentInterestDealer:
		a.InterestDealerMinor = v
	case ComponentInterestManufacturer:
		a.InterestManufacturerMinor = v
	case ComponentPrincipal:
		a.PrincipalMinor = v
	}
}

// Strategy is a repayment order per payer: each payer settles only the
// components listed for it, in that order, each in full before the next.
// Keeping the order in a table lets other orders (for example Fineract-style
// principal first) be added without touching the repayment write path.
type Strategy struct {
	// Name identifies the strategy in configuration and logs.
	Name string
	// Orders maps each payer to the components it pays, first first. A
	// payer absent from the map cannot repay under this strategy.
	Orders map[Payer][]Component
}

// SeedOrder is the repayment order riverbank launched with: the dealer clears
// penalty, then late fees, then its interest, and only then principal, so
// the costliest debts go first; the manufacturer only ever pays its share of
// interest, so a subsidy cannot reduce the dealer's debt.
var SeedOrder = Strategy{
	Name: "seed",
	Orders: map[Payer][]Component{
		PayerDealer:       {ComponentPenalty, ComponentLateFee, ComponentInterestDealer, ComponentPrincipal},
		PayerManufacturer: {ComponentInterestManufacturer},
	},
}

var allComponents = []Component{ComponentPenalty, ComponentLateFee, ComponentInterestDealer, ComponentInterestManufacturer, ComponentPrincipal}

// Validate reports a strategy that cannot allocate correctly: no name, no
// payers, a payer with an empty order, an unknown component or a component
// listed twice for one payer (which would count its balance twice in Owed).
// Strategies are code, not input, so the error is a plain error.
func (s Strategy) Validate() error {
	if s.Name == "" {
		return errors.New("validate strategy: empty name")
	}
	if len(s.Orders) == 0 {
		return fmt.Errorf("validate strategy %s: no payers", s.Name)
	}
	for _, p := range s.payers() {
		order := s.Orders[p]
		if len(order) == 0 {
			return fmt.Errorf("validate strategy %s: payer %s pays nothing", s.Name, p)
		}
		var seen uint
		for _, c := range order {
			if !c.valid() {
				return fmt.Errorf("validate strategy %s: payer %s: unknown %v", s.Name, p, c)
			}
			if seen&(1<<c) != 0 {
				return fmt.Errorf("validate strategy %s: payer %s: %s listed twice", s.Name, p, c)
			}
			seen |= 1 << c
		}
	}
	return nil
}

// payers returns the payers of s sorted, so messages are deterministic.
func (s Strategy) payers() []Payer {
	ps := make([]Payer, 0, len(s.Orders))
	for p := range s.Orders {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// Owed returns the most payer p can pay on o: the sum of its components. It
// is 0 for a payer the strategy does not know. Negative fields (an invalid
// Outstanding, see Validate) count as zero, and the sum saturates at
// math.MaxInt64 instead of wrapping, so no int64 amount is ever wrongly
// called an overpayment.
func (s Strategy) Owed(o Outstanding, p Payer) int64 {
	var owed int64
	for _, c := range s.Orders[p] {
		v := o.of(c)
		if v <= 0 {
			continue
		}
		if owed > math.MaxInt64-v {
			return math.MaxInt64
		}
		owed += v
	}
	return owed
}

// Allocate splits a repayment of amount by payer p across o's components in
// the strategy's order, each up to what it owes. The parts sum to amount.
//
// It returns riverbank.EINVALID for a non-positive amount or a payer the
// strategy does not know, and riverbank.EOVERPAYMENT (with detail
// owed_minor) when amount exceeds Owed: money the loan cannot absorb must be
// refused, not parked. A negative outstanding or an invalid strategy is a
// plain error.
func (s Strategy) Allocate(o Outstanding, p Payer, amount int64) (Allocation, error) {
	if err := s.Validate(); err != nil {
		return Allocation{}, fmt.Errorf("allocate: %w", err)
	}
	if err := o.Validate(); err != nil {
		return Allocation{}, fmt.Errorf("allocate: %w", err)
	}
	if amount <= 0 {
		return Allocation{}, riverbank.Errorf(riverbank.EINVALID, "amount_minor must be positive, got %d", amount)
	}
	order, ok := s.Orders[p]
	if !ok {
		names := make([]string, 0, len(s.Orders))
		for _, q := range s.payers() {
			names = append(names, string(q))
		}
		return Allocation{}, riverbank.Errorf(riverbank.EINVALID, "payer %q is not one of %s", p, strings.Join(names, ", ")).
			WithDetail("allowed_payers", names)
	}
	if owed := s.Owed(o, p); amount > owed {
		return Allocation{}, riverbank.Errorf(riverbank.EOVERPAYMENT, "amount_minor %d is more than the %s owes (%d)", amount, p, owed).
			WithDetail("owed_minor", owed)
	}
	var a Allocation
	left := amount
	for _, c := range order {
		if left == 0 {
			break
		}
		pay := min(left, o.of(c))
		a.set(c, pay)
		left -= pay
	}
	if left != 0 {
		// Unreachable: amount <= Owed and Owed sums exactly these components.
		panic(fmt.Sprintf("rules: %d of %d left unallocated", left, amount))
	}
	return a, nil
}

// mustSum returns the sum of vs and panics if it overflows int64.
func mustSum(vs ...int64) int64 {
	var s int64
	for _, v := range vs {
		if (v > 0 && s > math.MaxInt64-v) || (v < 0 && s < math.MinInt64-v) {
			panic("rules: sum overflows int64")
		}
		s += v
	}
	return s
}
