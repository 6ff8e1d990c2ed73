package batch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/batch"
	"riverbank/internal/db"
	"riverbank/internal/domains"
	"riverbank/internal/ledger"
	"riverbank/internal/lending"
	"riverbank/internal/orders"
	"riverbank/internal/testkit"
	"riverbank/jobs"
)

// testBundle is a database of the test's own (committed data, so River
// clients can work it) with the process's services.
type testBundle struct {
	*testkit.Bundle
	batches *batch.Service
}

func setup(t *testing.T) *testBundle {
	t.Helper()
	k := testkit.DB(t, testkit.DBOptions{})
	return &testBundle{Bundle: k, batches: k.Services.Batches}
}

// client builds a River client with every worker of the process and no
// periodic jobs (an "instance"), not started.
func (b *testBundle) client(t *testing.T) *river.Client[pgx.Tx] {
	t.Helper()
	return b.Client(t, func(reg *jobs.Registration) { reg.Periodic = nil })
}

// work starts one instance.
func (b *testBundle) work(t *testing.T) *river.Client[pgx.Tx] {
	t.Helper()
	c := b.client(t)
	testkit.Start(t, c)
	return c
}

// account creates an account unique to the test and returns its code.
func (b *testBundle) account(t *testing.T, name, typ string) string {
	t.Helper()
	code := name + ":" + b.Suffix
	_, _, err := b.Services.Ledger.CreateAccount(b.Ctx, ledger.AccountInput{Code: code, Name: name, Type: typ, Currency: "CNY"})
	require.NoError(t, err)
	return code
}

// entry is a journal entry item: postings are (account, amount) pairs.
func entry(key string, postings ...any) map[string]any {
	ps := []map[string]any{}
	for i := 0; i < len(postings); i += 2 {
		ps = append(ps, map[string]any{"account": postings[i], "amount_minor": postings[i+1]})
	}
	return map[string]any{"idempotency_key": key, "postings": ps}
}

func raws(t *testing.T, items []any) []json.RawMessage {
	t.Helper()
	out := make([]json.RawMessage, len(items))
	for i, it := range items {
		b, err := json.Marshal(it)
		require.NoError(t, err)
		out[i] = b
	}
	return out
}

// submit creates a batch, which must be new.
func (b *testBundle) submit(t *testing.T, key, op string, items []any) *batch.Batch {
	t.Helper()
	return b.submitRaw(t, key, op, raws(t, items))
}

// submitRaw creates a batch of items as sent, which must be new. Only
// items that break the text rule are done at once (FAILED).
func (b *testBundle) submitRaw(t *testing.T, key, op string, items []json.RawMessage) *batch.Batch {
	t.Helper()
	bt, created, err := b.batches.Create(b.Ctx, batch.CreateInput{IdempotencyKey: b.ID(key), Operation: op, Items: items})
	require.NoError(t, err)
	require.True(t, created)
	require.Equal(t, batch.StatusRunning, bt.Status)
	require.Equal(t, len(items), bt.Total)
	require.Zero(t, bt.Succeeded)
	require.Equal(t, len(items), bt.Pending+bt.Failed)
	return bt
}

// waitDone waits until the batch is no longer RUNNING.
func (b *testBundle) waitDone(t *testing.T, id int64) *batch.Batch {
	t.Helper()
	var bt *batch.Batch
	testkit.WaitFor(t, 60*time.Second, "the batch to complete", func() bool {
		var err error
		bt, err = b.batches.Get(b.Ctx, id)
		require.NoError(t, err)
		return bt.Status != batch.StatusRunning
	})
	return bt
}

// items returns every item of a batch in index order.
func (b *testBundle) items(t *testing.T, id int64) []batch.Item {
	t.Helper()
	var out []batch.Item
	after := -1
	for {
		page, err := b.batches.Items(b.Ctx, id, batch.ItemFilter{AfterIndex: after, Limit: 500})
		require.NoError(t, err)
		out = append(out, page...)
		if len(page) < 500 {
			return out
		}
		after = page[len(page)-1].Index
	}
}

// requireCounts checks the batch's counters against its items.
func (b *testBundle) requireCounts(t *testing.T, bt *batch.Batch) {
	t.Helper()
	var s, f, p int
	for _, it := range b.items(t, bt.ID) {
		switch it.Status {
		case batch.ItemSucceeded:
			s++
		case batch.ItemFailed:
			f++
		default:
			p++
		}
	}
	require.Equal(t, []int{s, f, p}, []int{bt.Succeeded, bt.Failed, bt.Pending}, "counters match the items")
	require.Equal(t, bt.Total, s+f+p)
}

func (b *testBundle) completedEvents(t *testing.T, id int64) int64 {
	t.Helper()
	return b.Count(t, "SELECT count(*) FROM event WHERE type = 'batch.completed' AND subject_type = 'batch' AND subject_id = $1", fmt.Sprint(id))
}

func requireFailed(t *testing.T, it batch.Item, code string) {
	t.Helper()
	require.Equal(t, batch.ItemFailed, it.Status, "item %d", it.Index)
	require.NotNil(t, it.Error, "item %d", it.Index)
	require.Equal(t, code, it.Error.Code, "item %d: %s", it.Index, it.Error.Detail)
	require.NotEmpty(t, it.Error.Detail)
	require.Nil(t, it.ResultID)
	testkit.RequireNoLeak(t, it.Error.Detail)
}

func requireSucceeded(t *testing.T, it batch.Item) int64 {
	t.Helper()
	require.Equal(t, batch.ItemSucceeded, it.Status, "item %d: %+v", it.Index, it.Error)
	require.NotNil(t, it.ResultID)
	require.Nil(t, it.Error)
	return *it.ResultID
}

func TestJournalEntryItemsFailAlone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.work(t)
	cash, rev := b.account(t, "cash", "ASSET"), b.account(t, "revenue", "INCOME")
	k := func(n int) string { return b.ID(fmt.Sprintf("je-%d", n)) }
	withExtra := entry(k(3), cash, 100, rev, -100)
	withExtra["memo"] = "not a field of the endpoint"
	wrongType := map[string]any{"idempotency_key": k(4), "postings": []map[string]any{{"account": cash, "amount_minor": "100"}, {"account": rev, "amount_minor": -100}}}
	withNUL := entry(k(5), cash, 100, rev, -100)
	withNUL["description"] = "a NUL \x00 here"
	items := []any{
		entry(k(0), cash, 100, rev, -100),              // 0: ok
		entry(k(1), cash, 100, rev, -99),               // 1: unbalanced
		entry(k(2), cash, 100, "nope:"+b.Suffix, -100), // 2: unknown account
		withExtra,                         // 3: a field the endpoint refuses
		wrongType,                         // 4: a string for an integer
		withNUL,                           // 5: text the text rule refuses (failed at submission)
		entry(k(0), cash, 100, rev, -100), // 6: item 0 again: a replay
		entry(k(0), cash, 200, rev, -200), // 7: item 0's key, another entry
		entry(ledger.SystemKeyPrefix+b.Suffix, cash, 1, rev, -1), // 8: a reserved key
		entry(k(9), cash, 5, rev, -5),                            // 9: ok
	}
	bt := b.waitDone(t, b.submit(t, "mixed", batch.OpJournalEntry, items).ID)

	require.Equal(t, batch.StatusCompleted, bt.Status)
	require.NotNil(t, bt.CompletedAt)
	require.Equal(t, 3, bt.Succeeded)
	require.Equal(t, 7, bt.Failed)
	require.Zero(t, bt.Pending)
	b.requireCounts(t, bt)

	its := b.items(t, bt.ID)
	first := requireSucceeded(t, its[0])
	requireFailed(t, its[1], riverbank.EINVALID)
	requireFailed(t, its[2], riverbank.EUNPROCESSABLE)
	requireFailed(t, its[3], riverbank.EINVALID)
	require.Contains(t, its[3].Error.Detail, "memo")
	requireFailed(t, its[4], riverbank.EINVALID)
	requireFailed(t, its[5], riverbank.EINVALID)
	require.Equal(t, "description contains a NUL character: text must be valid UTF-8 without NUL characters or lone surrogates", its[5].Error.Detail)
	require.Equal(t, first, requireSucceeded(t, its[6]), "a replay of item 0's key returns item 0's entry")
	requireFailed(t, its[7], riverbank.EIDEMPOTENCYCONFLICT)
	requireFailed(t, its[8], riverbank.EINVALID)
	last := requireSucceeded(t, its[9])

	// Each failing item failed with the code and message its single
	// endpoint's domain function gives for the same input.
	_, _, err := b.Services.Ledger.Post(b.Ctx, ledger.EntryInput{IdempotencyKey: k(1), Postings: []ledger.PostingInput{{Account: cash, AmountMinor: 100}, {Account: rev, AmountMinor: -99}}})
	require.Equal(t, riverbank.ErrorMessage(err), its[1].Error.Detail)
	_, _, err = b.Services.Ledger.Post(b.Ctx, ledger.EntryInput{IdempotencyKey: k(2), Postings: []ledger.PostingInput{{Account: cash, AmountMinor: 100}, {Account: "nope:" + b.Suffix, AmountMinor: -100}}})
	require.Equal(t, riverbank.ErrorMessage(err), its[2].Error.Detail)

	// Exactly the two distinct successful entries were written, and the
	// batch completed once, with its event in the same transaction.
	require.EqualValues(t, 2, b.Count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key LIKE $1", "%"+b.Suffix))
	require.EqualValues(t, 2, b.Count(t, "SELECT count(*) FROM ledger_entry WHERE id = ANY($1)", []int64{first, last}))
	require.EqualValues(t, 1, b.completedEvents(t, bt.ID))
	var data struct {
		Status    string `json:"status"`
		Succeeded int    `json:"succeeded"`
	}
	var raw []byte
	require.NoError(t, b.Pool.QueryRow(b.Ctx, "SELECT data::text FROM event WHERE type = 'batch.completed' AND subject_id = $1", fmt.Sprint(bt.ID)).Scan(&raw))
	require.NoError(t, json.Unmarshal(raw, &data))
	require.Equal(t, batch.StatusCompleted, data.Status)
	require.Equal(t, 3, data.Succeeded)
}

func TestOrderBatchNeverOversells(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.work(t)
	const stock, batchOrders, singleOrders = 40, 250, 30
	sku := b.ID("SKU")
	_, _, err := b.Services.Orders.PutProduct(b.Ctx, orders.ProductInput{SKU: sku, Name: "Hot item", PriceMinor: 990, Currency: "CNY", Stock: stock})
	require.NoError(t, err)

	items := make([]any, batchOrders)
	for i := range items {
		items[i] = map[string]any{"buyer_id": b.ID(fmt.Sprintf("buyer-%d", i)), "merchant_id": "shop-1", "identifier": "cart-1",
			"items": []map[string]any{{"sku": sku, "quantity": 1}}}
	}
	bt := b.submit(t, "orders", batch.OpOrder, items)
	// The single endpoint competes for the same stock meanwhile.
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		placed int
	)
	for i := range singleOrders {
		wg.Go(func() {
			_, _, err := b.Services.Orders.Create(b.Ctx, orders.CreateInput{BuyerID: b.ID(fmt.Sprintf("single-%d", i)), MerchantID: "shop-1", Identifier: "cart-1",
				Items: []orders.ItemInput{{SKU: sku, Quantity: 1}}})
			if err == nil {
				mu.Lock()
				placed++
				mu.Unlock()
				return
			}
			require.Equal(t, riverbank.EINSUFFICIENTSTOCK, riverbank.ErrorCode(err), "error: %v", err)
		})
	}
	wg.Wait()
	bt = b.waitDone(t, bt.ID)
	require.Equal(t, batch.StatusCompleted, bt.Status)
	b.requireCounts(t, bt)

	require.Equal(t, stock, bt.Succeeded+placed, "exactly the stock was sold")
	ids := map[int64]bool{}
	for _, it := range b.items(t, bt.ID) {
		if it.Status == batch.ItemSucceeded {
			ids[*it.ResultID] = true
			continue
		}
		requireFailed(t, it, riverbank.EINSUFFICIENTSTOCK)
	}
	require.Len(t, ids, bt.Succeeded, "one order per successful item")
	var onHand, reserved, sold int64
	require.NoError(t, b.Pool.QueryRow(b.Ctx, "SELECT stock_on_hand, stock_reserved, sold FROM product_stock WHERE sku = $1", sku).Scan(&onHand, &reserved, &sold))
	require.EqualValues(t, stock, reserved+sold, "every unit is reserved or sold, none twice")
	require.EqualValues(t, stock, onHand+sold)
	require.EqualValues(t, stock, b.Count(t, "SELECT count(*) FROM orders o JOIN order_item i ON i.order_id = o.id WHERE i.sku = $1", sku))
}

// TestItemKeyUsedBySingleEndpoint: an item whose idempotency key the
// single endpoint already used gets that endpoint's result, for each
// operation, and writes nothing new.
func TestItemKeyUsedBySingleEndpoint(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.work(t)
	ctx := b.Ctx
	cash, rev := b.account(t, "cash", "ASSET"), b.account(t, "revenue", "INCOME")
	sku := b.ID("SKU")
	_, _, err := b.Services.Orders.PutProduct(ctx, orders.ProductInput{SKU: sku, Name: "One left", PriceMinor: 500, Currency: "CNY", Stock: 1})
	require.NoError(t, err)
	borrower := b.ID("dealer")
	_, _, err = b.Services.Lending.PutCreditLine(ctx, lending.CreditLineInput{BorrowerID: borrower, LimitMinor: 10_000_000, Currency: "CNY"})
	require.NoError(t, err)

	e, created, err := b.Services.Ledger.Post(ctx, ledger.EntryInput{IdempotencyKey: b.ID("je"), Postings: []ledger.PostingInput{{Account: cash, AmountMinor: 700}, {Account: rev, AmountMinor: -700}}})
	require.NoError(t, err)
	require.True(t, created)
	o, created, err := b.Services.Orders.Create(ctx, orders.CreateInput{BuyerID: b.ID("buyer"), MerchantID: "shop-1", Identifier: "cart-9", Items: []orders.ItemInput{{SKU: sku, Quantity: 1}}})
	require.NoError(t, err)
	require.True(t, created)
	loanIn := loanInput(b.ID("L-1"), borrower, 1_000_000)
	l, created, err := b.Services.Lending.CreateLoan(ctx, loanIn)
	require.NoError(t, err)
	require.True(t, created)
	r, created, err := b.Services.Lending.Repay(ctx, lending.RepaymentInput{LoanID: l.ID, Identifier: "bank-1", Payer: "DEALER", AmountMinor: 1000, ValueDate: "2026-11-15"})
	require.NoError(t, err)
	require.True(t, created)
	before := b.Count(t, "SELECT (SELECT count(*) FROM ledger_entry) + (SELECT count(*) FROM orders) + (SELECT count(*) FROM loan) + (SELECT count(*) FROM repayment)")

	for _, tc := range []struct {
		op   string
		item any
		want int64
	}{
		{batch.OpJournalEntry, entry(b.ID("je"), cash, 700, rev, -700), e.ID},
		// The stock ran out with that order: a repeat still returns it.
		{batch.OpOrder, map[string]any{"buyer_id": b.ID("buyer"), "merchant_id": "shop-1", "identifier": "cart-9", "items": []map[string]any{{"sku": sku, "quantity": 1}}}, o.ID},
		{batch.OpLoan, loanItem(loanIn), l.ID},
		{batch.OpRepayment, map[string]any{"loan_id": l.ID, "identifier": "bank-1", "payer": "DEALER", "amount_minor": 1000, "value_date": "2026-11-15"}, r.ID},
	} {
		bt := b.waitDone(t, b.submit(t, "replay-"+tc.op, tc.op, []any{tc.item}).ID)
		require.Equal(t, 1, bt.Succeeded, tc.op)
		require.Equal(t, tc.want, requireSucceeded(t, b.items(t, bt.ID)[0]), tc.op)
	}
	require.Equal(t, before, b.Count(t, "SELECT (SELECT count(*) FROM ledger_entry) + (SELECT count(*) FROM orders) + (SELECT count(*) FROM loan) + (SELECT count(*) FROM repayment)"),
		"replays write nothing")
}

func loanInput(no, borrower string, principal int64) lending.LoanInput {
	return lending.LoanInput{LoanNo: no, BorrowerID: borrower, Currency: "CNY", PrincipalMinor: principal, AnnualRateBps: 1200, PenaltyRateBps: 1800,
		LateFeeMinor: 500, StartDate: "2026-11-01", DueDate: "2027-05-01", InterestMode: lending.ModeDealer, DealerID: borrower}
}

// loanItem is in as the body of POST /v1/loans.
func loanItem(in lending.LoanInput) map[string]any {
	return map[string]any{"loan_no": in.LoanNo, "borrower_id": in.BorrowerID, "currency": in.Currency, "principal_minor": in.PrincipalMinor,
		"annual_rate_bps": in.AnnualRateBps, "penalty_rate_bps": in.PenaltyRateBps, "late_fee_minor": in.LateFeeMinor,
		"start_date": in.StartDate, "due_date": in.DueDate, "interest_mode": in.InterestMode, "dealer_id": in.DealerID}
}

func TestLoanAndRepaymentItemsFailAlone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.work(t)
	borrower := b.ID("dealer")
	_, _, err := b.Services.Lending.PutCreditLine(b.Ctx, lending.CreditLineInput{BorrowerID: borrower, LimitMinor: 1_000_000, Currency: "CNY"})
	require.NoError(t, err)

	noFee := loanItem(loanInput(b.ID("L-2"), borrower, 1000))
	delete(noFee, "late_fee_minor") // required by POST /v1/loans, though 0 is valid
	loans := []any{
		loanItem(loanInput(b.ID("L-1"), borrower, 600_000)), // 0: ok
		noFee, // 1: validation_failed
		loanItem(loanInput(b.ID("L-3"), borrower, 600_000)),       // 2: only 400,000 left
		loanItem(loanInput(b.ID("L-4"), "nobody-"+b.Suffix, 100)), // 3: no credit line
	}
	bt := b.waitDone(t, b.submit(t, "loans", batch.OpLoan, loans).ID)
	its := b.items(t, bt.ID)
	loanID := requireSucceeded(t, its[0])
	requireFailed(t, its[1], riverbank.EINVALID)
	require.Contains(t, its[1].Error.Detail, "late_fee_minor")
	requireFailed(t, its[2], riverbank.EINSUFFICIENTCREDIT)
	requireFailed(t, its[3], riverbank.EINSUFFICIENTCREDIT)
	line, err := b.Services.Lending.GetCreditLine(b.Ctx, borrower)
	require.NoError(t, err)
	require.EqualValues(t, 600_000, line.UsedMinor, "only the successful loan took credit")

	repayment := func(loanID any, identifier string, amount int64) map[string]any {
		m := map[string]any{"identifier": identifier, "payer": "DEALER", "amount_minor": amount, "value_date": "2026-11-15"}
		if loanID != nil {
			m["loan_id"] = loanID
		}
		return m
	}
	reps := []any{
		repayment(loanID, "bank-1", 1000),          // 0: ok
		repayment(loanID, "bank-2", 1_000_000_000), // 1: more than is owed
		repayment(int64(1<<40), "bank-3", 1000),    // 2: no such loan
		repayment(nil, "bank-4", 1000),             // 3: loan_id missing
		repayment(loanID, "bank-1", 1000),          // 4: item 0 again
		repayment(loanID, "bank-1", 2000),          // 5: item 0's identifier, another amount
	}
	bt = b.waitDone(t, b.submit(t, "repayments", batch.OpRepayment, reps).ID)
	b.requireCounts(t, bt)
	its = b.items(t, bt.ID)
	first := requireSucceeded(t, its[0])
	requireFailed(t, its[1], riverbank.EOVERPAYMENT)
	requireFailed(t, its[2], riverbank.ENOTFOUND)
	requireFailed(t, its[3], riverbank.EINVALID)
	require.Equal(t, first, requireSucceeded(t, its[4]))
	requireFailed(t, its[5], riverbank.EIDEMPOTENCYCONFLICT)
	require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM repayment WHERE loan_id = $1", loanID))
}

func TestSameKeyIsOneBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cash, rev := b.account(t, "cash", "ASSET"), b.account(t, "revenue", "INCOME")
	items := make([]any, 250)
	for i := range items {
		items[i] = entry(b.ID(fmt.Sprintf("je-%d", i)), cash, 10, rev, -10)
	}
	in := batch.CreateInput{IdempotencyKey: b.ID("once"), Operation: batch.OpJournalEntry, Items: raws(t, items)}

	// Concurrent submissions of one key make one batch.
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ids     []int64
		created int
	)
	for range 8 {
		wg.Go(func() {
			bt, c, err := b.batches.Create(b.Ctx, in)
			require.NoError(t, err)
			mu.Lock()
			defer mu.Unlock()
			ids = append(ids, bt.ID)
			if c {
				created++
			}
		})
	}
	wg.Wait()
	require.Equal(t, 1, created)
	slices.Sort(ids)
	require.Equal(t, ids[0], ids[len(ids)-1])

	// The same payload with other whitespace is the same request.
	spaced := slices.Clone(in.Items)
	spaced[0] = json.RawMessage("  " + string(spaced[0]) + "\n")
	bt, c, err := b.batches.Create(b.Ctx, batch.CreateInput{IdempotencyKey: in.IdempotencyKey, Operation: in.Operation, Items: spaced})
	require.NoError(t, err)
	require.False(t, c)
	require.Equal(t, ids[0], bt.ID)

	// Another payload under the key is a conflict, and so is another
	// operation.
	_, _, err = b.batches.Create(b.Ctx, batch.CreateInput{IdempotencyKey: in.IdempotencyKey, Operation: in.Operation, Items: in.Items[:249]})
	de := testkit.RequireCode(t, err, riverbank.EIDEMPOTENCYCONFLICT)
	require.Equal(t, ids[0], de.Details["batch_id"])
	_, _, err = b.batches.Create(b.Ctx, batch.CreateInput{IdempotencyKey: in.IdempotencyKey, Operation: batch.OpOrder, Items: in.Items})
	testkit.RequireCode(t, err, riverbank.EIDEMPOTENCYCONFLICT)

	require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM batch"))
	require.EqualValues(t, 250, b.Count(t, "SELECT count(*) FROM batch_item"))
	res, err := b.Inserter.JobList(b.Ctx, river.NewJobListParams().Kinds(batch.KindChunk).First(100))
	require.NoError(t, err)
	var chunks []batch.ChunkArgs
	for _, j := range res.Jobs {
		var a batch.ChunkArgs
		require.NoError(t, json.Unmarshal(j.EncodedArgs, &a))
		chunks = append(chunks, a)
		require.Equal(t, jobs.QueueBatch, j.Queue)
	}
	require.ElementsMatch(t, []batch.ChunkArgs{{BatchID: ids[0], From: 0, To: 100}, {BatchID: ids[0], From: 100, To: 200}, {BatchID: ids[0], From: 200, To: 250}}, chunks)
}

// textRuleDetail is the detail of the single endpoint's 422 for a field
// whose text breaks the text rule.
func textRuleDetail(field, reason string) string {
	return field + " " + reason + ": text must be valid UTF-8 without NUL characters or lone surrogates"
}

// TestItemsBreakingTheTextRuleFailAtSubmission: an item whose text breaks
// the API's text rule (invalid UTF-8, a lone surrogate escape, NUL) is
// FAILED when the batch is created — validation_failed with the detail the
// single endpoint's 422 gives, its field named within the item — and
// counted at once; it never runs, and the other items do. The request
// hash tells such items apart byte for byte.
func TestItemsBreakingTheTextRuleFailAtSubmission(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cash, rev := b.account(t, "cash", "ASSET"), b.account(t, "revenue", "INCOME")
	all := make([]any, 250)
	for i := range all {
		all[i] = entry(b.ID(fmt.Sprintf("je-%d", i)), cash, 10, rev, -10)
	}
	items := raws(t, all)
	raw := func(i int, description, account, extra string) json.RawMessage {
		return json.RawMessage(`{"idempotency_key":"` + b.ID(fmt.Sprintf("je-%d", i)) + `","description":"` + description + `",` +
			`"postings":[{"account":"` + cash + `","amount_minor":10},{"account":"` + account + `","amount_minor":-10}]` + extra + `}`)
	}
	items[5] = raw(5, "ok", rev+"\xff", "")
	items[150] = raw(150, `lone \ud800`, rev, "")
	items[249] = raw(249, "ok", rev, `,"na\u0000me":1`)

	bt := b.submitRaw(t, "text", batch.OpJournalEntry, items)
	require.Equal(t, []int{0, 3, 247}, []int{bt.Succeeded, bt.Failed, bt.Pending}, "counted from the start")
	got, err := b.batches.Get(b.Ctx, bt.ID)
	require.NoError(t, err)
	require.Equal(t, []int{0, 3, 247}, []int{got.Succeeded, got.Failed, got.Pending})
	require.Equal(t, batch.StatusRunning, got.Status)
	failed, err := b.batches.Items(b.Ctx, bt.ID, batch.ItemFilter{Status: batch.ItemFailed, AfterIndex: -1, Limit: 10})
	require.NoError(t, err)
	require.Len(t, failed, 3)
	for i, want := range []struct {
		idx    int
		detail string
	}{
		{5, textRuleDetail("postings[1].account", "is not valid UTF-8")},
		{150, textRuleDetail("description", "contains a lone UTF-16 surrogate")},
		{249, textRuleDetail("body", "has a key that contains a NUL character")},
	} {
		require.Equal(t, want.idx, failed[i].Index)
		requireFailed(t, failed[i], riverbank.EINVALID)
		require.Equal(t, want.detail, failed[i].Error.Detail)
		require.NotNil(t, failed[i].FinishedAt)
	}
	// Postgres refuses invalid UTF-8 in any text: the failed item is
	// stored with U+FFFD in its place (it never runs); escapes are kept.
	var payload string
	require.NoError(t, b.Pool.QueryRow(b.Ctx, "SELECT payload::text FROM batch_item WHERE batch_id = $1 AND idx = 5", bt.ID).Scan(&payload))
	require.Contains(t, payload, rev+"\uFFFD")
	require.NoError(t, b.Pool.QueryRow(b.Ctx, "SELECT payload::text FROM batch_item WHERE batch_id = $1 AND idx = 150", bt.ID).Scan(&payload))
	require.Contains(t, payload, `lone \ud800`)

	// The same items again are the same batch; one byte changed in a
	// failed item, or U+FFFD sent where the invalid byte was, is another
	// payload.
	in := batch.CreateInput{IdempotencyKey: b.ID("text"), Operation: batch.OpJournalEntry, Items: items}
	again, created, err := b.batches.Create(b.Ctx, in)
	require.NoError(t, err)
	require.False(t, created)
	require.Equal(t, bt.ID, again.ID)
	for _, account := range []string{rev + "\xfe", rev + "\uFFFD", rev + `\ufffd`} {
		other := slices.Clone(items)
		other[5] = raw(5, "ok", account, "")
		_, _, err = b.batches.Create(b.Ctx, batch.CreateInput{IdempotencyKey: in.IdempotencyKey, Operation: in.Operation, Items: other})
		testkit.RequireCode(t, err, riverbank.EIDEMPOTENCYCONFLICT)
	}

	b.work(t)
	bt = b.waitDone(t, bt.ID)
	require.Equal(t, batch.StatusCompleted, bt.Status)
	require.Equal(t, []int{247, 3, 0}, []int{bt.Succeeded, bt.Failed, bt.Pending})
	b.requireCounts(t, bt)
	require.EqualValues(t, 1, b.completedEvents(t, bt.ID))
	its := b.items(t, bt.ID)
	for _, i := range []int{5, 150, 249} {
		require.Equal(t, textRuleDetail(map[int]string{5: "postings[1].account", 150: "description", 249: "body"}[i],
			map[int]string{5: "is not valid UTF-8", 150: "contains a lone UTF-16 surrogate", 249: "has a key that contains a NUL character"}[i]), its[i].Error.Detail)
	}
	// The failed items wrote nothing; the others one entry each, and no
	// text with U+FFFD reached the ledger.
	require.EqualValues(t, 247, b.Count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key LIKE $1", "%"+b.Suffix))
	require.EqualValues(t, 0, b.Count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key = ANY($1)", []string{b.ID("je-5"), b.ID("je-150"), b.ID("je-249")}))
	for _, table := range []string{"ledger_account", "ledger_entry", "ledger_posting"} {
		require.EqualValues(t, 0, b.Count(t, "SELECT count(*) FROM "+table+" x WHERE strpos(x::text, U&'\\FFFD') > 0"), table)
	}
}

// TestBatchOfOnlyTextRuleFailuresCompletes: a batch whose every item
// breaks the text rule is created with failed = total and completes when
// its chunks run (they find nothing pending), with one batch.completed,
// however many instances run its chunks.
func TestBatchOfOnlyTextRuleFailuresCompletes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	items := make([]json.RawMessage, 250)
	for i := range items {
		items[i] = json.RawMessage(fmt.Sprintf(`{"idempotency_key":"je-%d\u0000","postings":[]}`, i))
	}
	bt := b.submitRaw(t, "all-failed", batch.OpJournalEntry, items)
	require.Equal(t, []int{0, 250, 0}, []int{bt.Succeeded, bt.Failed, bt.Pending})
	require.EqualValues(t, 1, b.Count(t, "SELECT count(*) FROM batch_tally WHERE batch_id = $1", bt.ID))
	require.EqualValues(t, 3, b.Count(t, "SELECT count(*) FROM river_job WHERE kind = $1", batch.KindChunk))

	b.work(t)
	b.work(t)
	bt = b.waitDone(t, bt.ID)
	require.Equal(t, batch.StatusCompleted, bt.Status)
	require.NotNil(t, bt.CompletedAt)
	require.Equal(t, []int{0, 250, 0}, []int{bt.Succeeded, bt.Failed, bt.Pending})
	b.requireCounts(t, bt)
	testkit.WaitFor(t, 30*time.Second, "every chunk to finish", func() bool {
		return b.Count(t, "SELECT count(*) FROM river_job WHERE kind = $1 AND state <> 'completed'", batch.KindChunk) == 0
	})
	require.EqualValues(t, 1, b.completedEvents(t, bt.ID))
	for _, it := range b.items(t, bt.ID) {
		requireFailed(t, it, riverbank.EINVALID)
		require.Equal(t, textRuleDetail("idempotency_key", "contains a NUL character"), it.Error.Detail)
	}
}

func TestCreateRefusesBadEnvelopes(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ok := []json.RawMessage{json.RawMessage(`{"a":1}`)}
	tooMany := make([]json.RawMessage, batch.MaxItems+1)
	for i := range tooMany {
		tooMany[i] = ok[0]
	}
	for name, in := range map[string]batch.CreateInput{
		"no key":          {Operation: batch.OpOrder, Items: ok},
		"NUL in key":      {IdempotencyKey: "a\x00b", Operation: batch.OpOrder, Items: ok},
		"unknown op":      {IdempotencyKey: "k", Operation: "transfer", Items: ok},
		"no items":        {IdempotencyKey: "k", Operation: batch.OpOrder},
		"too many items":  {IdempotencyKey: "k", Operation: batch.OpOrder, Items: tooMany},
		"an array item":   {IdempotencyKey: "k", Operation: batch.OpOrder, Items: []json.RawMessage{ok[0], json.RawMessage(`[1]`)}},
		"a string item":   {IdempotencyKey: "k", Operation: batch.OpOrder, Items: []json.RawMessage{json.RawMessage(`"x"`)}},
		"an invalid item": {IdempotencyKey: "k", Operation: batch.OpOrder, Items: []json.RawMessage{json.RawMessage(`{"a":`)}},
	} {
		_, _, err := b.batches.Create(b.Ctx, in)
		require.Equal(t, riverbank.EINVALID, riverbank.ErrorCode(err), "%s: %v", name, err)
	}
	require.EqualValues(t, 0, b.Count(t, "SELECT (SELECT count(*) FROM batch) + (SELECT count(*) FROM batch_item) + (SELECT count(*) FROM river_job)"))
}

func TestCancelStopsItemsNotStarted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cash, rev := b.account(t, "cash", "ASSET"), b.account(t, "revenue", "INCOME")
	items := make([]any, 300)
	for i := range items {
		items[i] = entry(b.ID(fmt.Sprintf("je-%d", i)), cash, 10, rev, -10)
	}
	bt := b.submit(t, "cancel", batch.OpJournalEntry, items)

	// The first chunk runs (as a worker would); then the batch is
	// cancelled before any other chunk starts.
	res, err := b.batches.RunChunk(b.Ctx, batch.ChunkArgs{BatchID: bt.ID, From: 0, To: 100}, false)
	require.NoError(t, err)
	require.Equal(t, 100, res.Succeeded)
	cancelled, err := b.batches.Cancel(b.Ctx, bt.ID)
	require.NoError(t, err)
	require.Equal(t, batch.StatusCancelled, cancelled.Status)
	require.NotNil(t, cancelled.CancelledAt)
	require.Nil(t, cancelled.CompletedAt)
	require.Equal(t, []int{100, 0, 200}, []int{cancelled.Succeeded, cancelled.Failed, cancelled.Pending})

	// Every chunk job runs to completion and does nothing.
	client := b.work(t)
	testkit.WaitFor(t, 30*time.Second, "every chunk job to complete", func() bool {
		res, err := client.JobList(b.Ctx, river.NewJobListParams().Kinds(batch.KindChunk).States(rivertype.JobStateCompleted).First(10))
		require.NoError(t, err)
		return len(res.Jobs) == 3
	})
	after, err := b.batches.Get(b.Ctx, bt.ID)
	require.NoError(t, err)
	require.Equal(t, *cancelled, *after)
	b.requireCounts(t, after)
	for _, it := range b.items(t, bt.ID)[100:] {
		require.Equal(t, batch.ItemPending, it.Status)
	}
	require.EqualValues(t, 100, b.Count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key LIKE $1", "%"+b.Suffix))
	require.Zero(t, b.completedEvents(t, bt.ID))

	// Cancelling again returns it; a completed batch cannot be cancelled.
	again, err := b.batches.Cancel(b.Ctx, bt.ID)
	require.NoError(t, err)
	require.Equal(t, *cancelled, *again)
	done := b.waitDone(t, b.submit(t, "done", batch.OpJournalEntry, items[:1]).ID)
	require.Equal(t, batch.StatusCompleted, done.Status)
	_, err = b.batches.Cancel(b.Ctx, done.ID)
	testkit.RequireCode(t, err, riverbank.EINVALIDTRANSITION)
	_, err = b.batches.Cancel(b.Ctx, 1<<40)
	testkit.RequireCode(t, err, riverbank.ENOTFOUND)
}

// TestTwoInstancesDoEveryItemOnce: two River clients (two instances) on one
// database share a batch's chunks; a third runner that claimed items and
// did their writes dies (its transaction rolls back) and the chunk's retry
// does them. Every item is done exactly once.
func TestTwoInstancesDoEveryItemOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := b.Ctx
	cash, rev := b.account(t, "cash", "ASSET"), b.account(t, "revenue", "INCOME")
	const n = 3000
	items := make([]any, n)
	for i := range items {
		items[i] = entry(b.ID(fmt.Sprintf("je-%d", i)), cash, int64(i+1), rev, -int64(i+1))
	}
	c1, c2 := b.client(t), b.client(t)
	testkit.Start(t, c1)
	testkit.Start(t, c2)

	bt := b.submit(t, "shared", batch.OpJournalEntry, items)

	// A doomed runner holds items 150..159 (chunk 1) and has written
	// their entries, uncommitted, like an instance about to be killed.
	doomed, err := b.Pool.Begin(ctx)
	require.NoError(t, err)
	rows, err := doomed.Query(ctx, "SELECT idx, payload::text FROM batch_item WHERE batch_id = $1 AND idx BETWEEN 150 AND 159 FOR UPDATE", bt.ID)
	require.NoError(t, err)
	payloads, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct {
		Idx     int32
		Payload string
	}])
	require.NoError(t, err)
	require.Len(t, payloads, 10)
	doomedLedger := ledger.NewService(db.NewStore(doomed, b.Inserter))
	for _, p := range payloads {
		var in ledger.EntryInput
		require.NoError(t, json.Unmarshal([]byte(p.Payload), &in))
		_, _, err := doomedLedger.Post(ctx, in)
		require.NoError(t, err)
	}

	start := time.Now()
	testkit.WaitFor(t, 60*time.Second, "every item but the doomed runner's to be done", func() bool {
		got, err := b.batches.Get(ctx, bt.ID)
		require.NoError(t, err)
		return got.Pending == 10
	})
	t.Logf("two instances did %d items in %s", n-10, time.Since(start))
	// The runner dies: its writes vanish and its items are PENDING again.
	require.NoError(t, doomed.Rollback(ctx))
	// Retry the chunk now rather than after its backoff.
	res, err := c1.JobList(ctx, river.NewJobListParams().Kinds(batch.KindChunk).States(rivertype.JobStateRetryable).First(10))
	require.NoError(t, err)
	for _, j := range res.Jobs {
		_, err := c1.JobRetry(ctx, j.ID)
		require.NoError(t, err)
	}
	bt = b.waitDone(t, bt.ID)

	require.Equal(t, batch.StatusCompleted, bt.Status)
	require.Equal(t, n, bt.Succeeded)
	b.requireCounts(t, bt)
	results := map[int64]bool{}
	for _, it := range b.items(t, bt.ID) {
		results[requireSucceeded(t, it)] = true
	}
	require.Len(t, results, n, "one entry per item")
	require.EqualValues(t, n, b.Count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key LIKE $1", "%"+b.Suffix))
	require.EqualValues(t, int64(n)*(n+1)/2, b.Count(t, "SELECT sum(p.amount_minor)::bigint FROM ledger_posting p JOIN ledger_entry e ON e.id = p.entry_id WHERE e.idempotency_key LIKE $1 AND p.amount_minor > 0", "%"+b.Suffix))
	require.EqualValues(t, 1, b.completedEvents(t, bt.ID))
	require.GreaterOrEqual(t, b.Count(t, "SELECT attempt FROM river_job WHERE kind = $1 AND (args->>'from')::int = 100", batch.KindChunk), int64(2),
		"the chunk with the held items ran again")

	// Both instances worked the batch.
	require.EqualValues(t, 2, b.Count(t, "SELECT count(DISTINCT attempted_by[array_length(attempted_by, 1)]) FROM river_job WHERE kind = $1", batch.KindChunk))
}

// TestInternalErrorIsRetriedThenRecorded: an item that fails for a reason
// that is not its own (here a lock timeout) stays PENDING while the
// chunk's other items go on, is done by a later attempt, and is recorded
// FAILED internal only on the last attempt.
func TestInternalErrorIsRetriedThenRecorded(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := b.Ctx
	cash, rev := b.account(t, "cash", "ASSET"), b.account(t, "revenue", "INCOME")
	acc, err := b.Services.Ledger.GetAccount(ctx, cash, "CNY")
	require.NoError(t, err)

	// A service whose connections give up on a lock after 100 ms.
	pcfg, err := pgxpool.ParseConfig(b.Pool.Config().ConnString())
	require.NoError(t, err)
	pcfg.ConnConfig.RuntimeParams["lock_timeout"] = "100ms"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	svc := domains.New(b.Config, nil, db.NewStore(pool, b.Inserter)).Batches

	// Large entries on an account serialise on its advisory lock: hold it.
	hold := func() pgx.Tx {
		tx, err := b.Pool.Begin(ctx)
		require.NoError(t, err)
		_, err = tx.Exec(ctx, "SELECT pg_advisory_xact_lock(1919251322, ($1::bigint % 2147483647)::integer)", acc.ID)
		require.NoError(t, err)
		return tx
	}
	large := ledger.LargeAmountMinor + 1
	items := []any{entry(b.ID("a"), cash, 10, rev, -10), entry(b.ID("big"), cash, large, rev, -large), entry(b.ID("c"), cash, 10, rev, -10)}
	create := func(key string) *batch.Batch {
		bt, _, err := svc.Create(ctx, batch.CreateInput{IdempotencyKey: b.ID(key), Operation: batch.OpJournalEntry, Items: raws(t, items)})
		require.NoError(t, err)
		return bt
	}
	args := func(bt *batch.Batch) batch.ChunkArgs { return batch.ChunkArgs{BatchID: bt.ID, From: 0, To: 3} }

	lock := hold()
	bt := create("retried")
	res, err := svc.RunChunk(ctx, args(bt), false)
	require.ErrorIs(t, err, batch.ErrChunkUnfinished)
	require.Equal(t, batch.ChunkResult{Succeeded: 2, Deferred: 1}, res)
	its := b.items(t, bt.ID)
	require.Equal(t, batch.ItemPending, its[1].Status)
	require.Nil(t, its[1].Error)
	require.NoError(t, lock.Rollback(ctx))
	res, err = svc.RunChunk(ctx, args(bt), false)
	require.NoError(t, err)
	require.Equal(t, batch.ChunkResult{Succeeded: 1, Completed: true}, res)
	requireSucceeded(t, b.items(t, bt.ID)[1])

	// The entries are the same items again: the second batch's items
	// 0 and 2 are replays. Its large item keeps failing internally.
	items[1] = entry(b.ID("big-2"), cash, large, rev, -large)
	lock = hold()
	defer func() { _ = lock.Rollback(ctx) }()
	bt = create("last-attempt")
	_, err = svc.RunChunk(ctx, args(bt), false)
	require.ErrorIs(t, err, batch.ErrChunkUnfinished)
	res, err = svc.RunChunk(ctx, args(bt), true)
	require.NoError(t, err)
	require.Equal(t, batch.ChunkResult{Failed: 1, Completed: true}, res)
	got, err := svc.Get(ctx, bt.ID)
	require.NoError(t, err)
	require.Equal(t, batch.StatusCompleted, got.Status)
	require.Equal(t, []int{2, 1, 0}, []int{got.Succeeded, got.Failed, got.Pending})
	it := b.items(t, bt.ID)[1]
	requireFailed(t, it, riverbank.EINTERNAL)
	require.Equal(t, "internal error", it.Error.Detail)
}

// TestKilledRunnerMidChunk: a chunk run cut off part-way (its context
// ends, as when a process dies) leaves every item either done with its
// outcome or PENDING with no effect; the next run does the rest once.
func TestKilledRunnerMidChunk(t *testing.T) {
	t.Parallel()
	b := setup(t)
	cash, rev := b.account(t, "cash", "ASSET"), b.account(t, "revenue", "INCOME")
	items := make([]any, 100)
	for i := range items {
		items[i] = entry(b.ID(fmt.Sprintf("je-%d", i)), cash, 10, rev, -10)
	}
	bt := b.submit(t, "killed", batch.OpJournalEntry, items)
	args := batch.ChunkArgs{BatchID: bt.ID, From: 0, To: 100}
	for _, d := range []time.Duration{5 * time.Millisecond, 20 * time.Millisecond, 60 * time.Millisecond} {
		ctx, cancel := context.WithTimeout(b.Ctx, d)
		_, _ = b.batches.RunChunk(ctx, args, false)
		cancel()
		got, err := b.batches.Get(b.Ctx, bt.ID)
		require.NoError(t, err)
		b.requireCounts(t, got)
		require.EqualValues(t, got.Succeeded, b.Count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key LIKE $1", "%"+b.Suffix),
			"an entry exists exactly for each SUCCEEDED item")
	}
	// A cut-off run's backend may hold its rows for a moment after the
	// client went away; the next run skips them until then.
	testkit.WaitFor(t, 10*time.Second, "a run to finish the chunk", func() bool {
		_, err := b.batches.RunChunk(b.Ctx, args, false)
		return err == nil
	})
	got, err := b.batches.Get(b.Ctx, bt.ID)
	require.NoError(t, err)
	require.Equal(t, batch.StatusCompleted, got.Status)
	require.Equal(t, 100, got.Succeeded)
	require.EqualValues(t, 100, b.Count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key LIKE $1", "%"+b.Suffix))
	require.EqualValues(t, 1, b.completedEvents(t, bt.ID))
}

// TestUrgentEntriesBesideLedgerApply: urgent entries take the ledger's
// shared apply lock of each account until commit, and ledger.apply's last
// step waits for it exclusively. A batch of urgent entries on a few hot
// accounts, with ledger.apply working them at the same time, completes
// and every posting is applied.
func TestUrgentEntriesBesideLedgerApply(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.work(t)
	var accounts []string
	for i := range 4 {
		accounts = append(accounts, b.account(t, fmt.Sprintf("hot%d", i), "ASSET"))
	}
	items := make([]any, 600)
	for i := range items {
		e := entry(b.ID(fmt.Sprintf("je-%d", i)), accounts[i%4], 10, accounts[(i+1)%4], -10)
		e["urgent"] = i%3 != 0
		items[i] = e
	}
	bt := b.waitDone(t, b.submit(t, "urgent", batch.OpJournalEntry, items).ID)
	require.Equal(t, 600, bt.Succeeded)
	testkit.WaitFor(t, 60*time.Second, "every urgent posting to be applied", func() bool {
		return b.Count(t, `SELECT count(*) FROM ledger_posting_state p JOIN ledger_entry e ON e.id = p.entry_id
			WHERE e.urgent AND e.idempotency_key LIKE $1 AND p.applied_at IS NULL`, "%"+b.Suffix) == 0
	})
}
