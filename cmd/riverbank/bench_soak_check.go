package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"riverbank"
	"riverbank/internal/bench"
	"riverbank/internal/db"
)

// soakStream is one reader of the events feed — the long-polling consumer
// or the webhook receiver — and the check that it received every event
// exactly once, in feed order.
//
// The check runs as the soak goes, so memory stays bounded: the ids
// received since the last check are compared with the feed's (txid, id)
// order read from the database after the last position verified. Only as
// many rows are compared as were received, and every row up to the last
// received event is final (the feed serves an event only when every
// transaction before it has ended), so a later commit cannot slot in
// between. A re-sent event (webhooks are at least once) is the one just
// verified again, and is counted as a duplicate.
type soakStream struct {
	name  string
	types []string // the event types it gets (nil: all)
	subID int64    // the webhook subscription (0: the feed consumer)

	mu       sync.Mutex
	pending  []int64 // received, not verified yet, in arrival order
	n        int64   // received this interval
	lag      *bench.Histogram
	lagTotal bench.Histogram

	vmu      sync.Mutex
	posTxid  int64
	posID    int64
	verified int64
	dups     int64
	mismatch string
}

func (s *soakStream) arrive(id int64, occurred, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lag == nil {
		s.lag = &bench.Histogram{}
	}
	s.pending = append(s.pending, id)
	s.n++
	s.lag.Add(now.Sub(occurred))
	s.lagTotal.Add(now.Sub(occurred))
}

// takeInterval returns the events received and their lag since the last
// call.
func (s *soakStream) takeInterval() (int64, *bench.Histogram) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, lag := s.n, s.lag
	if lag == nil {
		lag = &bench.Histogram{}
	}
	s.n, s.lag = 0, &bench.Histogram{}
	return n, lag
}

// resetLag forgets the lags measured so far (those of the calibration).
func (s *soakStream) resetLag() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n, s.lag = 0, &bench.Histogram{}
	s.lagTotal.Reset()
}

// ServeHTTP is the webhook receiver of every subscription (/hook/{i}):
// it records the event and answers 204.
func (s *soak) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	i, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/hook/"))
	if err != nil || i < 0 || i >= len(s.hooks) {
		http.NotFound(w, r)
		return
	}
	var ev struct {
		ID         int64     `json:"id"`
		OccurredAt time.Time `json:"occurred_at"`
	}
	if err := json.NewDecoder(r.Body).Decode(&ev); err != nil || ev.ID == 0 {
		http.Error(w, "not an event", http.StatusBadRequest)
		return
	}
	s.hooks[i].arrive(ev.ID, ev.OccurredAt, now)
	s.lagThirds.add(s.hooks[i].name, now, now.Sub(ev.OccurredAt))
	w.WriteHeader(http.StatusNoContent)
}

func (s *soakStream) state() (verified, dups int64, mismatch string) {
	s.vmu.Lock()
	defer s.vmu.Unlock()
	return s.verified, s.dups, s.mismatch
}

// verify compares the ids received since the last call with the feed.
func (s *soakStream) verify(ctx context.Context, q *db.Queries) error {
	s.vmu.Lock()
	defer s.vmu.Unlock()
	s.mu.Lock()
	ids := s.pending
	s.pending = nil
	s.mu.Unlock()
	if s.mismatch != "" {
		return nil
	}
	for i := 0; i < len(ids); {
		rows, err := q.BenchSoakFeedAfter(ctx, db.BenchSoakFeedAfterParams{AfterTxid: s.posTxid, AfterID: s.posID, Types: s.types, Lim: int32(min(len(ids)-i, 5000))})
		if err != nil {
			s.mu.Lock()
			s.pending = append(ids[i:len(ids):len(ids)], s.pending...)
			s.mu.Unlock()
			return fmt.Errorf("read the feed: %w", err)
		}
		j := 0
		for i < len(ids) && (j < len(rows) || len(rows) == 0) {
			id := ids[i]
			if s.verified > 0 && id == s.posID {
				s.dups++
				i++
				continue
			}
			if j == len(rows) {
				s.mismatch = fmt.Sprintf("received event %d after the %d events of the feed it had, none of them after event %d", id, s.verified, s.posID)
				return nil
			}
			if id != rows[j].ID {
				s.mismatch = fmt.Sprintf("after %d events in feed order, expected event %d, received %d", s.verified, rows[j].ID, id)
				return nil
			}
			s.posTxid, s.posID = rows[j].Txid, rows[j].ID
			s.verified++
			i, j = i+1, j+1
		}
	}
	return nil
}

func (s *soak) streams() []*soakStream {
	return append([]*soakStream{s.feed}, s.hooks...)
}

func (s *soak) verifyStreams(ctx context.Context) {
	for _, st := range s.streams() {
		if err := st.verify(ctx, s.q); err != nil {
			s.stats().fail(soakErrKey{kind: st.name, code: err.Error()})
		}
	}
}

type soakFeedPage struct {
	Events []struct {
		ID         int64     `json:"id"`
		OccurredAt time.Time `json:"occurred_at"`
	} `json:"events"`
	NextCursor string `json:"next_cursor"`
}

func (s *soak) readFeed(ctx context.Context, cursor, wait string) (*soakFeedPage, error) {
	q := url.Values{"limit": {"500"}}
	if cursor != "" {
		q.Set("after", cursor)
	}
	if wait != "" {
		q.Set("wait", wait)
	}
	var page soakFeedPage
	var prob bench.Problem
	st, err := s.c.Do(ctx, http.MethodGet, "/v1/events?"+q.Encode(), nil, &page, &prob)
	if err != nil {
		return nil, err
	}
	if st != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/events: status %d %s", st, prob.Code)
	}
	return &page, nil
}

// consume follows the feed from its beginning with long-poll (wait=10s)
// until ctx ends.
func (s *soak) consume(ctx context.Context) {
	cursor := ""
	defer func() {
		s.feedMu.Lock()
		s.feedCursor = cursor
		s.feedMu.Unlock()
	}()
	for ctx.Err() == nil {
		page, err := s.readFeed(ctx, cursor, "10s")
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.stats().fail(soakErrKey{kind: "feed.read", code: err.Error()})
			time.Sleep(time.Second)
			continue
		}
		now := time.Now()
		for _, e := range page.Events {
			s.feed.arrive(e.ID, e.OccurredAt, now)
			s.lagThirds.add(s.feed.name, now, now.Sub(e.OccurredAt))
		}
		if page.NextCursor != "" {
			cursor = page.NextCursor
		}
	}
}

// catchUp reads the rest of the feed after the load (no wait) and
// verifies both streams.
func (s *soak) catchUp(ctx context.Context) error {
	s.feedMu.Lock()
	cursor := s.feedCursor
	s.feedMu.Unlock()
	for {
		page, err := s.readFeed(ctx, cursor, "")
		if err != nil {
			return err
		}
		now := time.Now()
		for _, e := range page.Events {
			s.feed.arrive(e.ID, e.OccurredAt, now)
		}
		if page.NextCursor != "" {
			cursor = page.NextCursor
		}
		if len(page.Events) == 0 {
			break
		}
	}
	s.verifyStreams(ctx)
	return nil
}

// drain waits, after the load, until the asynchronous work it caused is
// done: postings applied, credit restored, merges run, the last close of
// business checked, batches completed, every order paid or expired, and
// both readers at the end of the feed. It returns how that went, for the
// title of the final check.
func (s *soak) drain(ctx context.Context) string {
	t0 := time.Now()
	last := t0
	for {
		b, err := s.q.BenchSoakBacklog(ctx)
		if err != nil {
			return fmt.Sprintf("; reading the backlog failed: %v", err)
		}
		s.verifyStreams(ctx)
		caughtUp := true
		var behind []string
		for _, st := range s.streams() {
			want, err := s.q.BenchSoakEventCount(ctx, st.types)
			if err != nil {
				return fmt.Sprintf("; counting events failed: %v", err)
			}
			v, _, _ := st.state()
			caughtUp = caughtUp && v >= want
			behind = append(behind, fmt.Sprintf("%s behind %d", st.name, want-v))
		}
		left := fmt.Sprintf("pending postings %d, unrestored repayments %d, unmerged items %d, open COB runs %d, running batches %d, unpaid orders %d, %s events",
			b.PendingPostings, b.Unrestored, b.Unmerged, b.CobOpen, b.BatchesRunning, b.OrdersUnpaid, strings.Join(behind, ", "))
		if b.PendingPostings == 0 && b.Unrestored == 0 && b.Unmerged == 0 && b.CobOpen == 0 && b.BatchesRunning == 0 && b.OrdersUnpaid == 0 && caughtUp {
			fmt.Fprintf(s.stdout, "drained in %s (%d events in the feed)\n", time.Since(t0).Round(100*time.Millisecond), b.Events)
			return fmt.Sprintf(" and %s of draining", time.Since(t0).Round(time.Second))
		}
		if time.Since(t0) > s.o.drainTimeout {
			fmt.Fprintf(s.stdout, "NOT drained after %s: %s\n", s.o.drainTimeout, left)
			return fmt.Sprintf("; NOT drained after %s", s.o.drainTimeout)
		}
		if time.Since(last) >= 15*time.Second {
			fmt.Fprintf(s.stdout, "draining (%s): %s\n", time.Since(t0).Round(time.Second), left)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return "; interrupted"
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// soakCheck is one invariant's verdict.
type soakCheck struct {
	name   string
	ok     bool
	detail string
}

// soakExpectedItemFailures are the codes a batch item may fail with in a
// soak (the same ones its single endpoint is expected to answer).
var soakExpectedItemFailures = map[string][]string{
	"order": {riverbank.EINSUFFICIENTSTOCK},
	"loan":  {riverbank.EINSUFFICIENTCREDIT, riverbank.EDATENOTOPEN},
}

// checks evaluates the invariants in one REPEATABLE READ snapshot. Under
// load (final false) only those that hold in any snapshot are checked, in
// the form that does: postings applied or pending sum to zero, credit used
// counts repayments not restored yet, an order may be a minute late to
// expire, case merges may be pending. After the drain (final true) the
// strict forms are checked, plus the readers' streams, batches and errors.
func (s *soak) checks(ctx context.Context, final bool) ([]soakCheck, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck
	q := s.q.WithTx(tx)
	var out []soakCheck
	add := func(name string, ok bool, format string, args ...any) {
		out = append(out, soakCheck{name: name, ok: ok, detail: fmt.Sprintf(format, args...)})
	}
	backlog, err := q.BenchSoakBacklog(ctx)
	if err != nil {
		return nil, err
	}

	// Ledger.
	tb, err := q.TrialBalanceByCurrency(ctx)
	if err != nil {
		return nil, err
	}
	ok, accounts := true, int64(0)
	var parts []string
	for _, c := range tb {
		accounts += c.Accounts
		if final {
			ok = ok && c.Balanced
		} else {
			ok = ok && c.BalanceTotalMinor+c.PendingTotalMinor == 0
		}
		parts = append(parts, fmt.Sprintf("%s Σ balances %d, Σ pending %d", c.Currency, c.BalanceTotalMinor, c.PendingTotalMinor))
	}
	if final {
		add("trial balance zero per currency after the ledger queue drained", ok, "%s", strings.Join(parts, "; "))
	} else {
		add("postings applied + pending sum to zero per currency", ok, "%s", strings.Join(parts, "; "))
	}
	mm, err := q.AccountBalanceMismatches(ctx)
	if err != nil {
		return nil, err
	}
	add("every balance = Σ of its applied postings", len(mm) == 0, "%d of %d accounts differ", len(mm), accounts)
	unbalanced, err := q.BenchSoakUnbalancedEntries(ctx)
	if err != nil {
		return nil, err
	}
	add("every journal entry sums to zero", unbalanced == 0, "%d entries do not", unbalanced)

	// Stock.
	stock, err := q.BenchSoakStockMismatches(ctx)
	if err != nil {
		return nil, err
	}
	var byPut, byReserved, bySold []string
	for _, p := range stock {
		if p.StockOnHand+p.Sold != p.PutTotal {
			byPut = append(byPut, fmt.Sprintf("%s on_hand+sold %d, last PUT left %d", p.Sku, p.StockOnHand+p.Sold, p.PutTotal))
		}
		if p.StockReserved != p.CreatedQuantity {
			byReserved = append(byReserved, fmt.Sprintf("%s reserved %d, CREATED orders %d", p.Sku, p.StockReserved, p.CreatedQuantity))
		}
		if p.Sold != p.ConfirmedQuantity {
			bySold = append(bySold, fmt.Sprintf("%s sold %d, confirmed orders %d", p.Sku, p.Sold, p.ConfirmedQuantity))
		}
	}
	add("stock: on_hand + sold changed only by PUT /v1/products", len(byPut) == 0, "%d of %d skus differ%s", len(byPut), s.o.skus, firstFew(byPut))
	add("stock: reserved = Σ quantities of CREATED orders", len(byReserved) == 0, "%d skus differ%s", len(byReserved), firstFew(byReserved))
	add("stock: sold = Σ quantities of confirmed, not cancelled orders", len(bySold) == 0, "%d skus differ%s", len(bySold), firstFew(bySold))

	// Orders.
	grace := 60.0
	if final {
		grace = 0
	}
	ord, err := q.BenchSoakOrders(ctx, grace)
	if err != nil {
		return nil, err
	}
	add("every order in a final state after its expiry", ord.UnpaidPastExpiry == 0 && ord.ExpiredEarly == 0,
		"%d orders: %d paid/shipped/completed, %d expired, %d cancelled, %d unpaid; unpaid more than %.0fs past expires_at %d, expired before expires_at %d",
		ord.Orders, ord.Paid, ord.Expired, ord.Cancelled, ord.Unpaid, grace, ord.UnpaidPastExpiry, ord.ExpiredEarly)
	add("every order's status = the last transition of its history", ord.HistoryMismatch == 0, "%d differ", ord.HistoryMismatch)

	// Credit.
	credit, err := q.BenchSoakCreditMismatches(ctx)
	if err != nil {
		return nil, err
	}
	var creditBad []string
	for _, c := range credit {
		creditBad = append(creditBad, fmt.Sprintf("%s used %d, outstanding %d + unrestored %d", c.BorrowerID, c.UsedMinor, c.OutstandingMinor, c.UnrestoredMinor))
	}
	if final {
		add("credit used = principal outstanding per line", len(credit) == 0 && backlog.Unrestored == 0,
			"%d of %d lines differ, %d repayments not restored%s", len(credit), s.o.borrowers, backlog.Unrestored, firstFew(creditBad))
	} else {
		add("credit used = principal outstanding + principal repaid not yet restored, per line", len(credit) == 0,
			"%d of %d lines differ (%d repayments awaiting credit.restore)%s", len(credit), s.o.borrowers, backlog.Unrestored, firstFew(creditBad))
	}
	sub, err := q.COBSubledger(ctx)
	if err != nil {
		return nil, err
	}
	var subBad []string
	for _, r := range sub {
		for _, l := range []struct {
			name          string
			loans, booked int64
		}{{"principal", r.LoansPrincipal, r.AccountPrincipal}, {"dealer interest", r.LoansInterestDealer, r.AccountInterestDealer},
			{"manufacturer interest", r.LoansInterestManufacturer, r.AccountInterestManufacturer}, {"penalty", r.LoansPenalty, r.AccountPenalty},
			{"late fee", r.LoansLateFee, r.AccountLateFee}} {
			if l.loans != l.booked {
				subBad = append(subBad, fmt.Sprintf("%s %s: loans %d, accounts %d", r.Currency, l.name, l.loans, l.booked))
			}
		}
	}
	add("sub-ledger: receivable accounts = what the loans owe, per currency", len(subBad) == 0, "%d of %d lines differ%s", len(subBad), 5*len(sub), firstFew(subBad))

	// Collection.
	col, err := q.BenchSoakCollection(ctx)
	if err != nil {
		return nil, err
	}
	add("at most one OPEN case per borrower", col.BorrowersWithOpenCasesGt1 == 0, "%d borrowers have more (%d OPEN, %d CLOSED cases)", col.BorrowersWithOpenCasesGt1, col.OpenCases, col.ClosedCases)
	colOK := col.OverdueWithoutOneItem == 0 && col.OpenItemsNotOverdue == 0 && col.OpenCasesWithoutItems == 0
	if final {
		add("every overdue loan in exactly one OPEN case (its borrower's)", colOK && col.OverdueNotInOpenCase == 0,
			"%d OVERDUE loans: %d without exactly one open item, %d not in an OPEN case of their borrower; open items of loans not OVERDUE %d; OPEN cases without an open item %d",
			col.OverdueLoans, col.OverdueWithoutOneItem, col.OverdueNotInOpenCase, col.OpenItemsNotOverdue, col.OpenCasesWithoutItems)
	} else {
		add("every overdue loan has exactly one open collection item", colOK,
			"%d OVERDUE loans: %d without exactly one open item (%d awaiting case.merge); open items of loans not OVERDUE %d; OPEN cases without an open item %d",
			col.OverdueLoans, col.OverdueWithoutOneItem, col.OverdueNotInOpenCase, col.OpenItemsNotOverdue, col.OpenCasesWithoutItems)
	}

	// Close of business.
	cob, err := q.BenchSoakCOB(ctx)
	if err != nil {
		return nil, err
	}
	add("COB: every loan closed once per date, none left behind", cob.ClosingsByRuns == cob.ClosingsByLoans && cob.LeftBehind == 0 && cob.Failed == 0 && cob.LoansFailed == 0,
		"%d runs (%d COMPLETED, %d FAILED); (loan, date) closings counted by the runs %d, carried by the loans %d; loans left behind %d; loans failed %d; accrual months %d",
		cob.Runs, cob.Completed, cob.Failed, cob.ClosingsByRuns, cob.ClosingsByLoans, cob.LeftBehind, cob.LoansFailed, cob.AccrualMonths)
	add("COB: every run's stored trial balance balanced", cob.Unbalanced == 0 && (!final || cob.WithoutTrialBalance == 0),
		"%d unbalanced, %d COMPLETED runs without one", cob.Unbalanced, cob.WithoutTrialBalance)

	// The feed's readers.
	for _, st := range s.streams() {
		want, err := q.BenchSoakEventCount(ctx, st.types)
		if err != nil {
			return nil, err
		}
		v, dups, mismatch := st.state()
		ok := mismatch == "" && dups == 0 && (!final || v == want)
		detail := fmt.Sprintf("%d of %d events verified in feed order, %d duplicates", v, want, dups)
		if mismatch != "" {
			detail += "; " + mismatch
		}
		name := "events feed consumer saw every event exactly once, in feed order"
		if st.subID != 0 {
			name = st.name + " got every event of its subscription once, in feed order"
			if final {
				wd, err := q.BenchSoakWebhookDeliveries(ctx, st.subID)
				if err != nil {
					return nil, err
				}
				ok = ok && wd.Rows == want && wd.Delivered == wd.Rows
				detail += fmt.Sprintf("; %d delivery rows, %d delivered, %d retries", wd.Rows, wd.Delivered, wd.Retries)
			}
		}
		add(name, ok, "%s", detail)
	}

	if final {
		bs, err := q.BenchSoakBatches(ctx)
		if err != nil {
			return nil, err
		}
		fails, err := q.BenchSoakBatchFailures(ctx)
		if err != nil {
			return nil, err
		}
		var unexpectedItems int64
		var fparts []string
		for _, f := range fails {
			fparts = append(fparts, fmt.Sprintf("%s %s ×%d", f.Operation, f.Code, f.Items))
			if !slices.Contains(soakExpectedItemFailures[f.Operation], f.Code) {
				unexpectedItems += f.Items
			}
		}
		add("batches COMPLETED, items failed only with expected codes", bs.NotCompleted == 0 && bs.ItemsPending == 0 && unexpectedItems == 0,
			"%d batches (%d not COMPLETED), %d items (%d pending); failed items: %s; unexpected %d",
			bs.Batches, bs.NotCompleted, bs.Items, bs.ItemsPending, orNone(strings.Join(fparts, ", ")), unexpectedItems)
		tot := s.stats().totals()
		var n int64
		for _, v := range tot.unexpected {
			n += v
		}
		add("no unexpected errors", n == 0, "%s", fmtErrs(tot.unexpected))
	}
	return out, nil
}

func firstFew(xs []string) string {
	if len(xs) == 0 {
		return ""
	}
	return ": " + strings.Join(xs[:min(len(xs), 3)], "; ")
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// printChecks prints the verdicts (under load: one line unless one
// failed) and remembers the failures.
func (s *soak) printChecks(title string, checks []soakCheck) {
	failed := 0
	for _, c := range checks {
		if !c.ok {
			failed++
			s.failures = append(s.failures, title+": "+c.name)
		}
	}
	final := strings.HasPrefix(title, "invariants (final")
	if !final && failed == 0 {
		fmt.Fprintf(s.stdout, "  %s: %d/%d PASS\n", title, len(checks), len(checks))
		return
	}
	fmt.Fprintf(s.stdout, "%s:\n", title)
	for _, c := range checks {
		if c.ok && !final {
			continue
		}
		verdict := "PASS"
		if !c.ok {
			verdict = "FAIL"
		}
		fmt.Fprintf(s.stdout, "  %s  %s — %s\n", verdict, c.name, c.detail)
	}
	fmt.Fprintf(s.stdout, "  %d/%d PASS\n", len(checks)-failed, len(checks))
}
