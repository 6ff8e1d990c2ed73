package main

import (
	"context"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"riverbank"
	"riverbank/internal/bench"
	"riverbank/internal/lending"
)

// Operation kinds of the soak, in the order the lines print them.
const (
	skOrderCreate       = "order.create"
	skOrderPay          = "order.pay"
	skOrderCancel       = "order.cancel"
	skOrderShip         = "order.ship"
	skOrderReceive      = "order.receive"
	skProductPut        = "product.put"
	skEntryUrgent       = "entry.urgent"
	skEntryPlain        = "entry.plain"
	skAccountCreate     = "account.create"
	skLoanCreate        = "loan.create"
	skRepayDealer       = "repay.dealer"
	skRepayManufacturer = "repay.manuf"
	skCreditLinePut     = "credit.put"
	skBatch             = "batch"
	skReadOrder         = "get.order"
	skReadAccount       = "get.account"
	skReadProduct       = "get.product"
	skReadLoan          = "get.loan"
	skCOBStart          = "cob.start"
	// Derived timings, not requests of their own: a run from PUT until it
	// is COMPLETED with its trial balance stored, and a batch from its
	// submission until the poller saw it COMPLETED.
	skCOBRun    = "cob.run"
	skBatchDone = "batch.done"
)

var soakKinds = []string{skOrderCreate, skOrderPay, skOrderCancel, skOrderShip, skOrderReceive, skProductPut,
	skEntryUrgent, skEntryPlain, skAccountCreate, skLoanCreate, skRepayDealer, skRepayManufacturer, skCreditLinePut,
	skBatch, skReadOrder, skReadAccount, skReadProduct, skReadLoan, skCOBStart, skCOBRun, skBatchDone}

var soakDerived = map[string]bool{skCOBRun: true, skBatchDone: true}

// soakErrKey is one kind of failed request.
type soakErrKey struct {
	kind   string
	status int
	code   string
}

func (k soakErrKey) String() string {
	switch {
	case k.status == 0:
		return k.kind + " " + k.code
	case k.code == "":
		return fmt.Sprintf("%s %d", k.kind, k.status)
	}
	return fmt.Sprintf("%s %d %s", k.kind, k.status, k.code)
}

type soakKindStats struct {
	n   int64
	lat bench.Histogram
}

// soakCounts is what happened over an interval, or over the whole run.
type soakCounts struct {
	kinds      map[string]*soakKindStats
	expected   map[soakErrKey]int64
	unexpected map[soakErrKey]int64
	behind     int64
	span       time.Duration
}

func newSoakCounts() *soakCounts {
	return &soakCounts{kinds: map[string]*soakKindStats{}, expected: map[soakErrKey]int64{}, unexpected: map[soakErrKey]int64{}}
}

func (c *soakCounts) add(kind string, d time.Duration) {
	ks := c.kinds[kind]
	if ks == nil {
		ks = &soakKindStats{}
		c.kinds[kind] = ks
	}
	ks.n++
	ks.lat.Add(d)
}

// soakThirds keeps a latency histogram per key for each third of the
// load, so drift is judged on every request of the first third against
// every request of the last, not on a few interval percentiles (which
// alternate when, say, every other interval has a close of business).
type soakThirds struct {
	mu    sync.Mutex
	start time.Time
	dur   time.Duration
	h     [3]map[string]*bench.Histogram
}

// begin starts the thirds: the load runs from start for dur.
func (t *soakThirds) begin(start time.Time, dur time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.start, t.dur = start, dur
	for i := range t.h {
		t.h[i] = map[string]*bench.Histogram{}
	}
}

// add records d under key in the third that at falls in (nothing before
// begin or after the load).
func (t *soakThirds) add(key string, at time.Time, d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dur == 0 || at.Before(t.start) || !at.Before(t.start.Add(t.dur)) {
		return
	}
	third := t.h[int(3*at.Sub(t.start)/t.dur)]
	h := third[key]
	if h == nil {
		h = &bench.Histogram{}
		third[key] = h
	}
	h.Add(d)
}

// p99 returns key's p99 in the first and in the last third.
func (t *soakThirds) p99(key string) (first, last time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if h := t.h[0][key]; h != nil {
		first = h.Percentile(99)
	}
	if h := t.h[2][key]; h != nil {
		last = h.Percentile(99)
	}
	return first, last
}

// soakStats counts requests per interval and over the run, in constant
// memory (histograms, not lists of latencies).
type soakStats struct {
	mu       sync.Mutex
	interval *soakCounts
	total    *soakCounts
	since    time.Time
	samples  []string // the first unexpected failures, with detail
	thirds   soakThirds
}

func newSoakStats() *soakStats {
	return &soakStats{interval: newSoakCounts(), total: newSoakCounts(), since: time.Now()}
}

// record counts one request (or derived timing) of kind that took d.
// A failure is counted as expected or not.
func (s *soakStats) record(kind string, d time.Duration, failed *soakErrKey, expected bool) {
	s.thirds.add(kind, time.Now(), d)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range []*soakCounts{s.interval, s.total} {
		c.add(kind, d)
		if failed != nil {
			if expected {
				c.expected[*failed]++
			} else {
				c.unexpected[*failed]++
			}
		}
	}
}

// fail counts an unexpected failure outside the mix (feed, poller, COB).
func (s *soakStats) fail(k soakErrKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.interval.unexpected[k]++
	s.total.unexpected[k]++
	if len(s.samples) < soakSamples {
		s.samples = append(s.samples, k.String())
	}
}

// soakSamples is how many unexpected failures are kept with their detail
// for the summary.
const soakSamples = 20

// sample keeps the detail of an unexpected failure (the first few).
func (s *soakStats) sample(detail string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) < soakSamples {
		s.samples = append(s.samples, detail)
	}
}

func (s *soakStats) absorbSamples(samples []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = append(s.samples, samples...)
	s.samples = s.samples[:min(len(s.samples), soakSamples)]
}

func (s *soakStats) failureSamples() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.samples)
}

// absorbUnexpected adds unexpected failures counted elsewhere (the
// calibration) to the run's totals.
func (s *soakStats) absorbUnexpected(m map[soakErrKey]int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, v := range m {
		s.total.unexpected[k] += v
	}
}

func (s *soakStats) behind() {
	s.mu.Lock()
	s.interval.behind++
	s.total.behind++
	s.mu.Unlock()
}

// take returns the interval's counts and starts the next interval.
func (s *soakStats) take() *soakCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	iv := s.interval
	iv.span = time.Since(s.since)
	s.interval, s.since = newSoakCounts(), time.Now()
	return iv
}

func (s *soakStats) sinceTake() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Since(s.since)
}

func (s *soakStats) totals() *soakCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// soakOrder is an order the soak may still pay or cancel.
type soakOrder struct {
	id      int64
	total   int64
	expires time.Time
}

// soakLoan is a loan the soak may still repay. A loan is used by one
// client at a time (busy), so a repayment is sized from the loan as it
// is, not as another client left it.
type soakLoan struct {
	id          int64
	borrower    string
	mode        string
	gen         int64 // close-of-business runs completed before it was created
	manuPaidGen int64 // ... before its manufacturer last paid
	busy        bool
}

type soakBorrower struct {
	id, currency string
}

type soakBatch struct {
	id        int64
	submitted time.Time
}

// soakPoolCap bounds every pool: a long soak must not grow the load
// generator's memory (it shares the process, and so the RSS, with the
// server). Beyond it a random element is replaced.
const soakPoolCap = 5000

// soakState is what the clients share: the catalogue, accounts and lines
// made at the start, and pools of orders and loans in each state.
type soakState struct {
	run        string
	currencies []string
	seq        atomic.Int64
	date       atomic.Int64 // the open business date, Unix days
	cobGen     atomic.Int64

	mu        sync.Mutex
	skus      map[string][]string // by currency
	prices    map[string]int64
	accounts  map[string][]string // by currency
	borrowers []soakBorrower
	unpaid    []soakOrder
	paid      []int64
	shipped   []int64
	recent    []int64 // orders for reads (ring)
	recentAt  int
	loans     []*soakLoan
	batches   []soakBatch
}

func newSoakState(run string, o soakOpts) *soakState {
	st := &soakState{run: run, currencies: o.currencies, skus: map[string][]string{}, prices: map[string]int64{}, accounts: map[string][]string{}}
	st.date.Store(o.startDate.Unix() / 86400)
	return st
}

func (st *soakState) openDate() string {
	return time.Unix(st.date.Load()*86400, 0).UTC().Format(lending.DateLayout)
}

func (st *soakState) next() int64 { return st.seq.Add(1) }

func pushCapped[T any](xs []T, v T, rng *mrand.Rand) []T {
	if len(xs) < soakPoolCap {
		return append(xs, v)
	}
	xs[rng.IntN(len(xs))] = v
	return xs
}

func takeRandom[T any](xs *[]T, rng *mrand.Rand) (T, bool) {
	var zero T
	if len(*xs) == 0 {
		return zero, false
	}
	i := rng.IntN(len(*xs))
	v := (*xs)[i]
	(*xs)[i] = (*xs)[len(*xs)-1]
	*xs = (*xs)[:len(*xs)-1]
	return v, true
}

// takeUnpaid removes a random unpaid order with at least margin left
// before it expires; orders closer to expiry are dropped from the pool
// (they are left to expire).
func (st *soakState) takeUnpaid(rng *mrand.Rand, margin time.Duration) (soakOrder, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for {
		o, ok := takeRandom(&st.unpaid, rng)
		if !ok || time.Until(o.expires) > margin {
			return o, ok
		}
	}
}

func (st *soakState) push(pool *[]int64, id int64, rng *mrand.Rand) {
	st.mu.Lock()
	*pool = pushCapped(*pool, id, rng)
	st.mu.Unlock()
}

func (st *soakState) take(pool *[]int64, rng *mrand.Rand) (int64, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return takeRandom(pool, rng)
}

func (st *soakState) addOrder(o soakOrder, rng *mrand.Rand) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.unpaid = pushCapped(st.unpaid, o, rng)
	if len(st.recent) < 2000 {
		st.recent = append(st.recent, o.id)
	} else {
		st.recent[st.recentAt] = o.id
		st.recentAt = (st.recentAt + 1) % len(st.recent)
	}
}

func (st *soakState) recentOrder(rng *mrand.Rand) (int64, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.recent) == 0 {
		return 0, false
	}
	return st.recent[rng.IntN(len(st.recent))], true
}

// checkoutLoan marks a random idle loan that satisfies ok busy; a few
// draws, then none (the caller does something else).
func (st *soakState) checkoutLoan(rng *mrand.Rand, ok func(*soakLoan) bool) *soakLoan {
	st.mu.Lock()
	defer st.mu.Unlock()
	for range 16 {
		if len(st.loans) == 0 {
			return nil
		}
		l := st.loans[rng.IntN(len(st.loans))]
		if !l.busy && ok(l) {
			l.busy = true
			return l
		}
	}
	return nil
}

// returnLoan ends a checkout; a repaid loan leaves the pool.
func (st *soakState) returnLoan(l *soakLoan, repaid bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	l.busy = false
	if repaid {
		if i := indexOf(st.loans, l); i >= 0 {
			st.loans[i] = st.loans[len(st.loans)-1]
			st.loans = st.loans[:len(st.loans)-1]
		}
	}
}

func indexOf[T comparable](xs []T, v T) int {
	for i, x := range xs {
		if x == v {
			return i
		}
	}
	return -1
}

func (st *soakState) addLoan(l *soakLoan, rng *mrand.Rand) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.loans) < soakPoolCap {
		st.loans = append(st.loans, l)
		return
	}
	// Replace an idle one (a busy one is returned by its client).
	for range 16 {
		i := rng.IntN(len(st.loans))
		if !st.loans[i].busy {
			st.loans[i] = l
			return
		}
	}
}

func (st *soakState) randomLoan(rng *mrand.Rand) (int64, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.loans) == 0 {
		return 0, false
	}
	return st.loans[rng.IntN(len(st.loans))].id, true
}

func (st *soakState) randomAccounts(rng *mrand.Rand, n int) []string {
	st.mu.Lock()
	defer st.mu.Unlock()
	acc := st.accounts[st.currencies[rng.IntN(len(st.currencies))]]
	out := make([]string, 0, n)
	for _, i := range rng.Perm(len(acc))[:n] {
		out = append(out, acc[i])
	}
	return out
}

func (st *soakState) addAccount(currency, code string) {
	st.mu.Lock()
	st.accounts[currency] = append(st.accounts[currency], code)
	st.mu.Unlock()
}

func (st *soakState) randomSku(rng *mrand.Rand) (string, string) {
	cur := st.currencies[rng.IntN(len(st.currencies))]
	skus := st.skus[cur]
	return skus[rng.IntN(len(skus))], cur
}

// call sends one request of the mix and records it under kind; expected
// (may be nil) says whether a failure is one the load provokes on purpose.
func (s *soak) call(ctx context.Context, kind, method, path string, body, out any, expected func(status int, code string) bool) bool {
	var prob bench.Problem
	t0 := time.Now()
	st, err := s.c.Do(ctx, method, path, body, out, &prob)
	d := time.Since(t0)
	if err == nil && st >= 200 && st < 300 {
		s.stats().record(kind, d, nil, false)
		return true
	}
	k := soakErrKey{kind: kind, status: st, code: prob.Code}
	if err != nil {
		k = soakErrKey{kind: kind, code: "transport error"}
		if st != 0 {
			k = soakErrKey{kind: kind, status: st, code: "undecodable body"}
		}
	}
	exp := err == nil && expected != nil && expected(st, prob.Code)
	s.stats().record(kind, d, &k, exp)
	if !exp {
		detail := prob.Detail
		if err != nil {
			detail = err.Error()
		}
		s.stats().sample(fmt.Sprintf("%s %s: %s", method, path, detail))
	}
	return false
}

func isConflict(codes ...string) func(int, string) bool {
	return func(st int, code string) bool {
		if st != http.StatusConflict {
			return false
		}
		for _, c := range codes {
			if code == c {
				return true
			}
		}
		return false
	}
}

// exec carries out one operation of kind. An operation that needs
// something to act on (an unpaid order, a loan) and finds nothing places
// an order or grants a loan instead.
func (s *soak) exec(ctx context.Context, kind string, rng *mrand.Rand) {
	switch kind {
	case skOrderCreate:
		s.orderCreate(ctx, rng)
	case skOrderPay, skOrderCancel:
		if !s.orderPayOrCancel(ctx, kind, rng) {
			s.orderCreate(ctx, rng)
		}
	case skOrderShip, skOrderReceive:
		if !s.orderShipOrReceive(ctx, kind, rng) {
			s.orderCreate(ctx, rng)
		}
	case skProductPut:
		s.productPut(ctx, rng)
	case skEntryUrgent, skEntryPlain:
		s.entry(ctx, kind == skEntryUrgent, rng)
	case skAccountCreate:
		s.accountCreate(ctx, rng)
	case skLoanCreate:
		s.loanCreate(ctx, rng)
	case skRepayDealer, skRepayManufacturer:
		if !s.repay(ctx, kind, rng) {
			s.loanCreate(ctx, rng)
		}
	case skCreditLinePut:
		s.creditLinePut(ctx, rng)
	case skBatch:
		s.batch(ctx, rng)
	case skReadOrder:
		id, ok := s.st.recentOrder(rng)
		if !ok {
			s.orderCreate(ctx, rng)
			return
		}
		s.call(ctx, kind, http.MethodGet, fmt.Sprintf("/v1/orders/%d", id), nil, nil, nil)
	case skReadAccount:
		s.call(ctx, kind, http.MethodGet, "/v1/accounts/"+s.st.randomAccounts(rng, 1)[0], nil, nil, nil)
	case skReadProduct:
		sku, _ := s.st.randomSku(rng)
		s.call(ctx, kind, http.MethodGet, "/v1/products/"+sku, nil, nil, nil)
	case skReadLoan:
		id, ok := s.st.randomLoan(rng)
		if !ok {
			s.loanCreate(ctx, rng)
			return
		}
		s.call(ctx, kind, http.MethodGet, fmt.Sprintf("/v1/loans/%d", id), nil, nil, nil)
	}
}

type soakOrderBody struct {
	ID         int64     `json:"id"`
	TotalMinor int64     `json:"total_minor"`
	ExpiresAt  time.Time `json:"expires_at"`
}

func (s *soak) orderBody(rng *mrand.Rand) map[string]any {
	cur := s.st.currencies[rng.IntN(len(s.st.currencies))]
	skus := s.st.skus[cur]
	lines := 1 + rng.IntN(3)
	items := make([]map[string]any, 0, lines)
	for _, i := range rng.Perm(len(skus))[:lines] {
		items = append(items, map[string]any{"sku": skus[i], "quantity": 1 + rng.IntN(3)})
	}
	return map[string]any{
		"buyer_id":    fmt.Sprintf("%s-buyer-%d", s.st.run, rng.IntN(500)),
		"merchant_id": fmt.Sprintf("%s-m%d", s.st.run, rng.IntN(5)),
		"identifier":  fmt.Sprintf("o-%d", s.st.next()),
		"items":       items,
	}
}

func (s *soak) orderCreate(ctx context.Context, rng *mrand.Rand) {
	var out soakOrderBody
	if s.call(ctx, skOrderCreate, http.MethodPost, "/v1/orders", s.orderBody(rng), &out, isConflict(riverbank.EINSUFFICIENTSTOCK)) {
		s.st.addOrder(soakOrder{id: out.ID, total: out.TotalMinor, expires: out.ExpiresAt}, rng)
	}
}

// orderPayOrCancel pays or cancels an order with at least two seconds
// left to pay; a 409 invalid_transition is expected only when the answer
// came after the order's expires_at (its order.expire won the race).
func (s *soak) orderPayOrCancel(ctx context.Context, kind string, rng *mrand.Rand) bool {
	o, ok := s.st.takeUnpaid(rng, 2*time.Second)
	if !ok {
		return false
	}
	raced := func(st int, code string) bool {
		return st == http.StatusConflict && code == riverbank.EINVALIDTRANSITION && !time.Now().Before(o.expires)
	}
	if kind == skOrderPay {
		body := map[string]any{"payment_id": fmt.Sprintf("%s-pay-%d", s.st.run, o.id), "amount_minor": o.total}
		if s.call(ctx, kind, http.MethodPost, fmt.Sprintf("/v1/orders/%d/pay", o.id), body, nil, raced) {
			s.st.push(&s.st.paid, o.id, rng)
		}
		return true
	}
	s.call(ctx, kind, http.MethodPost, fmt.Sprintf("/v1/orders/%d/cancel", o.id), map[string]any{"reason": "soak: the buyer changed their mind"}, nil, raced)
	return true
}

func (s *soak) orderShipOrReceive(ctx context.Context, kind string, rng *mrand.Rand) bool {
	if kind == skOrderShip {
		id, ok := s.st.take(&s.st.paid, rng)
		if !ok {
			return false
		}
		if s.call(ctx, kind, http.MethodPost, fmt.Sprintf("/v1/orders/%d/ship", id), map[string]any{"tracking_no": fmt.Sprintf("SOAK%d", id)}, nil, nil) {
			s.st.push(&s.st.shipped, id, rng)
		}
		return true
	}
	id, ok := s.st.take(&s.st.shipped, rng)
	if !ok {
		return false
	}
	s.call(ctx, kind, http.MethodPost, fmt.Sprintf("/v1/orders/%d/receive", id), nil, nil, nil)
	return true
}

// productPut sets a product's on-hand stock (a stock take: 200–1,000
// units). Below what CREATED orders reserve it is refused (409 conflict),
// which the load provokes on purpose now and then.
func (s *soak) productPut(ctx context.Context, rng *mrand.Rand) {
	sku, cur := s.st.randomSku(rng)
	s.st.mu.Lock()
	price := s.st.prices[sku]
	s.st.mu.Unlock()
	body := map[string]any{"name": sku, "price_minor": price, "currency": cur, "stock": 200 + rng.IntN(801)}
	s.call(ctx, skProductPut, http.MethodPut, "/v1/products/"+sku, body, nil, isConflict(riverbank.ECONFLICT))
}

func (s *soak) entryBody(urgent bool, rng *mrand.Rand) map[string]any {
	n := 2 + rng.IntN(2)
	acc := s.st.randomAccounts(rng, n)
	postings := make([]map[string]any, 0, n)
	var sum int64
	for _, a := range acc[:n-1] {
		amt := 1 + rng.Int64N(100_000)
		sum += amt
		postings = append(postings, map[string]any{"account": a, "amount_minor": amt})
	}
	postings = append(postings, map[string]any{"account": acc[n-1], "amount_minor": -sum})
	return map[string]any{"idempotency_key": fmt.Sprintf("%s-e-%d", s.st.run, s.st.next()), "description": "soak", "urgent": urgent, "postings": postings}
}

func (s *soak) entry(ctx context.Context, urgent bool, rng *mrand.Rand) {
	kind := skEntryPlain
	if urgent {
		kind = skEntryUrgent
	}
	s.call(ctx, kind, http.MethodPost, "/v1/journal-entries", s.entryBody(urgent, rng), nil, nil)
}

var soakAccountTypes = []string{"ASSET", "LIABILITY", "EQUITY", "INCOME", "EXPENSE"}

func (s *soak) accountCreate(ctx context.Context, rng *mrand.Rand) {
	cur := s.st.currencies[rng.IntN(len(s.st.currencies))]
	code := fmt.Sprintf("%s:acct:%d", s.st.run, s.st.next())
	body := map[string]any{"code": code, "name": code, "type": soakAccountTypes[rng.IntN(len(soakAccountTypes))], "currency": cur}
	if s.call(ctx, skAccountCreate, http.MethodPost, "/v1/accounts", body, nil, nil) {
		s.st.addAccount(cur, code)
	}
}

var soakModes = []string{lending.ModeDealer, lending.ModeManufacturer, lending.ModeSplit}

// loanBody is a loan starting on the open business date, due one to five
// days later: most come due during a soak, and those nobody repays turn
// OVERDUE at a close of business and go to collection.
func (s *soak) loanBody(rng *mrand.Rand) (map[string]any, soakBorrower, string) {
	s.st.mu.Lock()
	b := s.st.borrowers[rng.IntN(len(s.st.borrowers))]
	s.st.mu.Unlock()
	start := s.st.date.Load()
	mode := soakModes[rng.IntN(len(soakModes))]
	body := map[string]any{
		"loan_no":          fmt.Sprintf("%s-l-%d", s.st.run, s.st.next()),
		"borrower_id":      b.id,
		"currency":         b.currency,
		"principal_minor":  100_000 + rng.Int64N(900_001),
		"annual_rate_bps":  800 + rng.IntN(1001),
		"penalty_rate_bps": 1800 + rng.IntN(1801),
		"late_fee_minor":   5000,
		"start_date":       time.Unix(start*86400, 0).UTC().Format(lending.DateLayout),
		"due_date":         time.Unix((start+1+rng.Int64N(5))*86400, 0).UTC().Format(lending.DateLayout),
		"interest_mode":    mode,
		"dealer_id":        b.id,
	}
	switch mode {
	case lending.ModeManufacturer:
		body["manufacturer_id"] = s.st.run + "-oem"
	case lending.ModeSplit:
		body["manufacturer_id"] = s.st.run + "-oem"
		body["manufacturer_share_bps"] = 2500
	}
	return body, b, mode
}

func (s *soak) loanCreate(ctx context.Context, rng *mrand.Rand) {
	body, b, mode := s.loanBody(rng)
	gen := s.st.cobGen.Load()
	var out struct {
		ID int64 `json:"id"`
	}
	// insufficient_credit: the lines' limits are the constraint on
	// purpose; date_not_open: the open date was closed meanwhile.
	if s.call(ctx, skLoanCreate, http.MethodPost, "/v1/loans", body, &out, isConflict(riverbank.EINSUFFICIENTCREDIT, riverbank.EDATENOTOPEN)) {
		s.st.addLoan(&soakLoan{id: out.ID, borrower: b.id, mode: mode, gen: gen, manuPaidGen: -1}, rng)
	}
}

type soakLoanBody struct {
	Status                               string `json:"status"`
	PrincipalOutstandingMinor            int64  `json:"principal_outstanding_minor"`
	InterestOutstandingDealerMinor       int64  `json:"interest_outstanding_dealer_minor"`
	InterestOutstandingManufacturerMinor int64  `json:"interest_outstanding_manufacturer_minor"`
	PenaltyOutstandingMinor              int64  `json:"penalty_outstanding_minor"`
	LateFeeOutstandingMinor              int64  `json:"late_fee_outstanding_minor"`
}

// repay reads a loan (get.loan) and repays it, value-dated on the open
// date: the dealer all it owes (penalty, late fee, dealer interest,
// principal) or a third of it, in turn at random; the manufacturer the
// manufacturer interest a close of business accrued. A loan whose last
// closed date passed the open date meanwhile answers 409 date_not_open:
// expected.
func (s *soak) repay(ctx context.Context, kind string, rng *mrand.Rand) bool {
	gen := s.st.cobGen.Load()
	manu := kind == skRepayManufacturer
	l := s.st.checkoutLoan(rng, func(l *soakLoan) bool {
		return !manu || (l.mode != lending.ModeDealer && l.gen < gen && l.manuPaidGen < gen)
	})
	if l == nil {
		return false
	}
	repaid := false
	defer func() { s.st.returnLoan(l, repaid) }()
	var lb soakLoanBody
	if !s.call(ctx, skReadLoan, http.MethodGet, fmt.Sprintf("/v1/loans/%d", l.id), nil, &lb, nil) {
		return true
	}
	if lb.Status == lending.StatusRepaid {
		repaid = true
		return true
	}
	payer, amount := "DEALER", lb.PenaltyOutstandingMinor+lb.LateFeeOutstandingMinor+lb.InterestOutstandingDealerMinor+lb.PrincipalOutstandingMinor
	if manu {
		payer, amount = "MANUFACTURER", lb.InterestOutstandingManufacturerMinor
		l.manuPaidGen = gen
	}
	if amount == 0 {
		return true // the other payer still owes something
	}
	if !manu && rng.IntN(2) == 0 {
		amount = max(1, amount/3)
	}
	body := map[string]any{"identifier": fmt.Sprintf("r-%d", s.st.next()), "payer": payer, "amount_minor": amount, "value_date": s.st.openDate()}
	var out struct {
		Loan *soakLoanBody `json:"loan"`
	}
	if s.call(ctx, kind, http.MethodPost, fmt.Sprintf("/v1/loans/%d/repayments", l.id), body, &out, isConflict(riverbank.EDATENOTOPEN)) && out.Loan != nil {
		repaid = out.Loan.Status == lending.StatusRepaid
	}
	return true
}

// creditLinePut moves a line's limit between 10 and 40 million minor
// units: with ~0.5 million per loan, lines fill up and loans are refused
// (insufficient_credit) until repayments restore credit.
func (s *soak) creditLinePut(ctx context.Context, rng *mrand.Rand) {
	s.st.mu.Lock()
	b := s.st.borrowers[rng.IntN(len(s.st.borrowers))]
	s.st.mu.Unlock()
	s.call(ctx, skCreditLinePut, http.MethodPut, "/v1/credit-lines/"+b.id, map[string]any{"limit_minor": 10_000_000 + rng.Int64N(30_000_001), "currency": b.currency}, nil, nil)
}

// batch submits a small batch: ten journal entries, five orders or three
// loans, in turn. Items fail alone with their endpoint's code (an order
// item insufficient_stock, a loan item insufficient_credit); the final
// check counts them by code.
func (s *soak) batch(ctx context.Context, rng *mrand.Rand) {
	n := s.st.next()
	var op string
	var items []map[string]any
	switch n % 3 {
	case 0:
		op = "journal_entry"
		for range 10 {
			items = append(items, s.entryBody(rng.IntN(2) == 0, rng))
		}
	case 1:
		op = "order"
		for range 5 {
			items = append(items, s.orderBody(rng))
		}
	default:
		op = "loan"
		for range 3 {
			b, _, _ := s.loanBody(rng)
			items = append(items, b)
		}
	}
	var out struct {
		ID int64 `json:"id"`
	}
	t0 := time.Now()
	if s.call(ctx, skBatch, http.MethodPost, "/v1/batches", map[string]any{"idempotency_key": fmt.Sprintf("%s-batch-%d", s.st.run, n), "operation": op, "items": items}, &out, nil) {
		s.st.mu.Lock()
		s.st.batches = append(s.st.batches, soakBatch{id: out.ID, submitted: t0})
		s.st.mu.Unlock()
	}
}

// pollBatches follows the submitted batches every second until each is
// COMPLETED (batch.done: submission to the poll that saw it), until the
// load ends and no batch is left.
func (s *soak) pollBatches(ctx, loadCtx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		s.st.mu.Lock()
		open := append([]soakBatch(nil), s.st.batches...)
		s.st.mu.Unlock()
		if len(open) == 0 && loadCtx.Err() != nil {
			return
		}
		var done []int64
		for _, b := range open {
			var out struct {
				Status string `json:"status"`
			}
			st, err := s.c.Do(ctx, http.MethodGet, fmt.Sprintf("/v1/batches/%d", b.id), nil, &out, nil)
			if err != nil || st != http.StatusOK {
				s.stats().fail(soakErrKey{kind: "batch.poll", status: st, code: fmt.Sprint(err)})
				continue
			}
			if out.Status != "RUNNING" {
				if out.Status != "COMPLETED" {
					s.stats().fail(soakErrKey{kind: "batch.poll", code: "batch " + out.Status})
				}
				s.stats().record(skBatchDone, time.Since(b.submitted), nil, false)
				done = append(done, b.id)
			}
		}
		s.st.mu.Lock()
		s.st.batches = removeBatches(s.st.batches, done)
		s.st.mu.Unlock()
	}
}

func removeBatches(bs []soakBatch, done []int64) []soakBatch {
	out := bs[:0]
	for _, b := range bs {
		if indexOf(done, b.id) < 0 {
			out = append(out, b)
		}
	}
	return out
}

type soakCOBRun struct {
	Date         string           `json:"date"`
	Status       string           `json:"status"`
	LoansTotal   int64            `json:"loans_total"`
	TrialBalance *json.RawMessage `json:"trial_balance"`
}

// cobLoop closes one simulated business date every --cob-every until the
// load ends. The open date moves first, so new loans and repayments use
// the next date while the run closes this one (a request that read the
// old date meanwhile gets an expected date_not_open).
func (s *soak) cobLoop(ctx, loadCtx context.Context) {
	t := time.NewTicker(s.o.cobEvery)
	defer t.Stop()
	for {
		select {
		case <-loadCtx.Done():
			return
		case <-t.C:
		}
		date := s.st.openDate()
		s.st.date.Add(1)
		t0 := time.Now()
		var run soakCOBRun
		if !s.call(ctx, skCOBStart, http.MethodPut, "/v1/cob-runs/"+date, nil, &run, nil) {
			continue
		}
		for run.Status == "RUNNING" || run.TrialBalance == nil {
			if time.Since(t0) > 10*time.Minute {
				s.stats().fail(soakErrKey{kind: skCOBRun, code: "run " + date + " not finished after 10 minutes"})
				break
			}
			time.Sleep(100 * time.Millisecond)
			st, err := s.c.Do(ctx, http.MethodGet, "/v1/cob-runs/"+date, nil, &run, nil)
			if err != nil || st != http.StatusOK {
				s.stats().fail(soakErrKey{kind: skCOBRun, status: st, code: fmt.Sprint(err)})
				if ctx.Err() != nil {
					return
				}
			}
			if run.Status == "FAILED" {
				s.stats().fail(soakErrKey{kind: skCOBRun, code: "run " + date + " FAILED"})
				break
			}
		}
		d := time.Since(t0)
		s.stats().record(skCOBRun, d, nil, false)
		s.st.cobGen.Add(1)
		s.cobMu.Lock()
		s.cobLast = fmt.Sprintf("%s %s %d loans in %s", date, run.Status, run.LoansTotal, fmtLat(d))
		s.cobMu.Unlock()
	}
}

// setup creates, in this order, the webhook subscription (so it wants
// every event the run makes), the products, accounts and credit lines.
func (s *soak) setup(ctx context.Context, receiverAddr string) error {
	for i, h := range s.hooks {
		var sub struct {
			ID int64 `json:"id"`
		}
		body := map[string]any{"url": fmt.Sprintf("http://%s/hook/%d", receiverAddr, i), "description": "soak " + h.name}
		if h.types != nil {
			body["event_types"] = h.types
		}
		st, err := s.c.Do(ctx, http.MethodPost, "/v1/webhook-subscriptions", body, &sub, nil)
		if err != nil || st != http.StatusCreated {
			return fmt.Errorf("create webhook subscription: status %d: %v", st, err)
		}
		h.subID = sub.ID
	}
	n, err := s.q.BenchSoakBacklog(ctx)
	if err != nil {
		return err
	}
	if n.Events != 0 {
		return fmt.Errorf("the soak needs an empty database: it has %d events", n.Events)
	}
	st0 := s.st
	for i := range s.o.skus {
		cur := st0.currencies[i%len(st0.currencies)]
		sku := fmt.Sprintf("%s-sku-%d", st0.run, i)
		price := int64(100 + 37*i)
		st0.skus[cur] = append(st0.skus[cur], sku)
		st0.prices[sku] = price
		if st, err := s.c.Do(ctx, http.MethodPut, "/v1/products/"+sku, map[string]any{"name": sku, "price_minor": price, "currency": cur, "stock": 1000}, nil, nil); err != nil || st != http.StatusCreated {
			return fmt.Errorf("create product %s: status %d: %v", sku, st, err)
		}
	}
	for _, cur := range st0.currencies {
		for i := range s.o.accounts {
			code := fmt.Sprintf("%s:%s:%d", st0.run, lowerASCII(cur), i)
			typ := soakAccountTypes[i%len(soakAccountTypes)]
			if st, err := s.c.Do(ctx, http.MethodPost, "/v1/accounts", map[string]any{"code": code, "name": code, "type": typ, "currency": cur}, nil, nil); err != nil || st != http.StatusCreated {
				return fmt.Errorf("create account %s: status %d: %v", code, st, err)
			}
			st0.accounts[cur] = append(st0.accounts[cur], code)
		}
	}
	for i := range s.o.borrowers {
		b := soakBorrower{id: fmt.Sprintf("%s-dealer-%d", st0.run, i), currency: st0.currencies[i%len(st0.currencies)]}
		if st, err := s.c.Do(ctx, http.MethodPut, "/v1/credit-lines/"+b.id, map[string]any{"limit_minor": 20_000_000, "currency": b.currency}, nil, nil); err != nil || st != http.StatusCreated {
			return fmt.Errorf("create credit line %s: status %d: %v", b.id, st, err)
		}
		st0.borrowers = append(st0.borrowers, b)
	}
	return nil
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
