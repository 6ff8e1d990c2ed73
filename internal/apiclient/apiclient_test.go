package apiclient_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	openapi_types "github.com/oapi-codegen/runtime/types"
	"github.com/stretchr/testify/require"

	"riverbank/internal/apiclient"
	"riverbank/internal/apiclient/apigen"
	"riverbank/internal/config"
	"riverbank/internal/testdb"
	"riverbank/internal/testkit"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// TestGeneratedClientIsCurrent fetches /openapi-3.0.json from a running
// server and fails when the committed document or client differs from what
// oapi-codegen generates from it: run `make client` and commit.
func TestGeneratedClientIsCurrent(t *testing.T) {
	t.Parallel()
	srv := testkit.Serve(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	doc, err := apigen.FetchDocument(ctx, http.DefaultClient, srv.URL)
	require.NoError(t, err)
	files, err := apigen.Files(".", doc)
	require.NoError(t, err)
	require.Len(t, files, 2)
	require.NoError(t, apigen.Check(".", files))

	// The check can fail: a document with one more word is another client.
	changed := strings.Replace(string(doc), `"title":"riverbank"`, `"title":"riverbank (changed)"`, 1)
	require.NotEqual(t, string(doc), changed)
	files, err = apigen.Files(".", []byte(changed))
	require.NoError(t, err)
	require.ErrorContains(t, apigen.Check(".", files), apigen.DocumentFile)
}

// flow is the generated client on a running server.
type flow struct {
	ctx context.Context
	c   *apiclient.ClientWithResponses
	srv *testkit.Server
}

func setupFlow(t *testing.T) *flow {
	t.Helper()
	srv := testkit.Serve(t, func(cfg *config.Config) {
		cfg.WebhookAllowPrivate = true
		// A credit.restore that fails once is a dead letter at once.
		cfg.CreditRestoreMaxAttempts = 1
	})
	c, err := apiclient.NewClientWithResponses(srv.URL, apiclient.WithRequestEditorFn(func(ctx context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+srv.Token)
		return nil
	}))
	require.NoError(t, err)
	return &flow{ctx: context.Background(), c: c, srv: srv}
}

func ptr[T any](v T) *T { return &v }

func date(d time.Time) openapi_types.Date { return openapi_types.Date{Time: d} }

// status fails the test unless resp answered want.
func status(t *testing.T, resp interface{ StatusCode() int }, body []byte, want int) {
	t.Helper()
	require.Equal(t, want, resp.StatusCode(), "body: %s", body)
}

// TestClientFlows drives one flow per resource with the generated client
// against the real process (API, River workers, River UI): every create
// and its idempotent replay yield a parsed body (JSON201 or JSON202, then
// JSON200, with the same resource), and problems parse with their code.
func TestClientFlows(t *testing.T) {
	t.Parallel()
	f := setupFlow(t)
	ctx, c := f.ctx, f.c
	today := time.Now().UTC().Truncate(24 * time.Hour)

	t.Run("unauthorized", func(t *testing.T) {
		anon, err := apiclient.NewClientWithResponses(f.srv.URL)
		require.NoError(t, err)
		resp, err := anon.GetSystemInfoWithResponse(ctx)
		require.NoError(t, err)
		status(t, resp, resp.Body, http.StatusUnauthorized)
		require.NotNil(t, resp.ApplicationproblemJSON401)
		require.Equal(t, apiclient.ProblemCode("unauthorized"), resp.ApplicationproblemJSON401.Code)
	})

	t.Run("system info", func(t *testing.T) {
		resp, err := c.GetSystemInfoWithResponse(ctx)
		require.NoError(t, err)
		status(t, resp, resp.Body, http.StatusOK)
		require.True(t, resp.JSON200.Schema.Current)
	})

	sku := "FLOW-TEA"
	t.Run("products", func(t *testing.T) {
		body := apiclient.PutProductJSONRequestBody{Name: "Flow tea", PriceMinor: 1200, Currency: "CNY", Stock: 10}
		created, err := c.PutProductWithResponse(ctx, sku, body)
		require.NoError(t, err)
		status(t, created, created.Body, http.StatusCreated)
		require.Equal(t, int64(10), created.JSON201.StockAvailable)
		body.Stock = 50
		updated, err := c.PutProductWithResponse(ctx, sku, body)
		require.NoError(t, err)
		status(t, updated, updated.Body, http.StatusOK)
		require.Equal(t, int64(50), updated.JSON200.StockOnHand)
		got, err := c.GetProductWithResponse(ctx, sku)
		require.NoError(t, err)
		status(t, got, got.Body, http.StatusOK)
		require.Equal(t, "Flow tea", got.JSON200.Name)
		missing, err := c.GetProductWithResponse(ctx, "NO-SUCH-SKU")
		require.NoError(t, err)
		status(t, missing, missing.Body, http.StatusNotFound)
		require.Equal(t, apiclient.ProblemCode("not_found"), missing.ApplicationproblemJSON404.Code)
	})

	t.Run("orders with replay", func(t *testing.T) {
		body := apiclient.CreateOrderJSONRequestBody{BuyerId: "flow-buyer", MerchantId: "flow-m", Identifier: "flow-order-1",
			Items: &[]apiclient.OrderLineInput{{Sku: sku, Quantity: 2}}}
		created, err := c.CreateOrderWithResponse(ctx, body)
		require.NoError(t, err)
		status(t, created, created.Body, http.StatusCreated)
		require.NotNil(t, created.JSON201)
		replay, err := c.CreateOrderWithResponse(ctx, body)
		require.NoError(t, err)
		status(t, replay, replay.Body, http.StatusOK)
		require.NotNil(t, replay.JSON200)
		require.Equal(t, created.JSON201.Id, replay.JSON200.Id)
		id := created.JSON201.Id

		other := body
		other.Items = &[]apiclient.OrderLineInput{{Sku: sku, Quantity: 3}}
		conflict, err := c.CreateOrderWithResponse(ctx, other)
		require.NoError(t, err)
		status(t, conflict, conflict.Body, http.StatusConflict)
		require.Equal(t, apiclient.ProblemCode("idempotency_conflict"), conflict.ApplicationproblemJSON409.Code)

		paid, err := c.PayOrderWithResponse(ctx, id, apiclient.PayOrderJSONRequestBody{PaymentId: "flow-pay-1", AmountMinor: created.JSON201.TotalMinor})
		require.NoError(t, err)
		status(t, paid, paid.Body, http.StatusOK)
		require.Equal(t, apiclient.OrderBodyStatus("PAID"), paid.JSON200.Status)
		shipped, err := c.ShipOrderWithResponse(ctx, id, apiclient.ShipOrderJSONRequestBody{TrackingNo: "SF-FLOW"})
		require.NoError(t, err)
		status(t, shipped, shipped.Body, http.StatusOK)
		received, err := c.ReceiveOrderWithResponse(ctx, id)
		require.NoError(t, err)
		status(t, received, received.Body, http.StatusOK)
		require.Equal(t, apiclient.OrderBodyStatus("COMPLETED"), received.JSON200.Status)
		cancelled, err := c.CancelOrderWithResponse(ctx, id, apiclient.CancelOrderJSONRequestBody{Reason: "too late"})
		require.NoError(t, err)
		status(t, cancelled, cancelled.Body, http.StatusConflict)
		require.Equal(t, apiclient.ProblemCode("invalid_transition"), cancelled.ApplicationproblemJSON409.Code)

		events, err := c.ListOrderEventsWithResponse(ctx, id, nil)
		require.NoError(t, err)
		status(t, events, events.Body, http.StatusOK)
		require.GreaterOrEqual(t, len(*events.JSON200.Events), 4, "created, (confirmed,) paid, shipped, completed")
		list, err := c.ListOrdersWithResponse(ctx, &apiclient.ListOrdersParams{BuyerId: ptr("flow-buyer")})
		require.NoError(t, err)
		status(t, list, list.Body, http.StatusOK)
		require.Len(t, *list.JSON200.Orders, 1)
		got, err := c.GetOrderWithResponse(ctx, id)
		require.NoError(t, err)
		status(t, got, got.Body, http.StatusOK)
		require.NotNil(t, got.JSON200.LedgerEntryId)
	})

	cash, rev := "flow:cash", "flow:revenue"
	t.Run("accounts", func(t *testing.T) {
		for code, typ := range map[string]apiclient.CreateAccountInputBodyType{cash: apiclient.CreateAccountInputBodyTypeASSET, rev: apiclient.CreateAccountInputBodyTypeINCOME} {
			body := apiclient.CreateAccountJSONRequestBody{Code: code, Name: code, Type: typ, Currency: "CNY"}
			created, err := c.CreateAccountWithResponse(ctx, body)
			require.NoError(t, err)
			status(t, created, created.Body, http.StatusCreated)
			replay, err := c.CreateAccountWithResponse(ctx, body)
			require.NoError(t, err)
			status(t, replay, replay.Body, http.StatusOK)
			require.Equal(t, created.JSON201.Code, replay.JSON200.Code)
		}
		got, err := c.GetAccountWithResponse(ctx, cash, &apiclient.GetAccountParams{Currency: ptr("CNY")})
		require.NoError(t, err)
		status(t, got, got.Body, http.StatusOK)
		require.Equal(t, apiclient.AccountBodyType("ASSET"), got.JSON200.Type)
		list, err := c.ListAccountsWithResponse(ctx, &apiclient.ListAccountsParams{Limit: ptr(int64(500))})
		require.NoError(t, err)
		status(t, list, list.Body, http.StatusOK)
		require.NotEmpty(t, *list.JSON200.Accounts)
	})

	t.Run("journal entries", func(t *testing.T) {
		body := apiclient.CreateJournalEntryJSONRequestBody{IdempotencyKey: "flow-je-1", Description: ptr("flow"), Urgent: ptr(true),
			Postings: &[]apiclient.PostingInputBody{{Account: cash, AmountMinor: 500}, {Account: rev, AmountMinor: -500}}}
		created, err := c.CreateJournalEntryWithResponse(ctx, body)
		require.NoError(t, err)
		status(t, created, created.Body, http.StatusCreated)
		replay, err := c.CreateJournalEntryWithResponse(ctx, body)
		require.NoError(t, err)
		status(t, replay, replay.Body, http.StatusOK)
		require.Equal(t, created.JSON201.Id, replay.JSON200.Id)
		testkit.WaitFor(t, 20*time.Second, "the urgent entry to be applied", func() bool {
			got, err := c.GetJournalEntryWithResponse(ctx, created.JSON201.Id)
			require.NoError(t, err)
			status(t, got, got.Body, http.StatusOK)
			return got.JSON200.Status == apiclient.EntryBodyStatus("APPLIED")
		})
		postings, err := c.ListAccountPostingsWithResponse(ctx, cash, &apiclient.ListAccountPostingsParams{Currency: ptr("CNY")})
		require.NoError(t, err)
		status(t, postings, postings.Body, http.StatusOK)
		require.Len(t, *postings.JSON200.Postings, 1)
		tb, err := c.GetTrialBalanceWithResponse(ctx)
		require.NoError(t, err)
		status(t, tb, tb.Body, http.StatusOK)
		require.Empty(t, *tb.JSON200.AccountMismatches)
	})

	borrower := "flow-dealer"
	var loanID int64
	t.Run("credit lines, loans and repayments", func(t *testing.T) {
		line := apiclient.PutCreditLineJSONRequestBody{LimitMinor: 10_000_000, Currency: "CNY"}
		created, err := c.PutCreditLineWithResponse(ctx, borrower, line)
		require.NoError(t, err)
		status(t, created, created.Body, http.StatusCreated)
		again, err := c.PutCreditLineWithResponse(ctx, borrower, line)
		require.NoError(t, err)
		status(t, again, again.Body, http.StatusOK)
		require.Equal(t, created.JSON201.LimitMinor, again.JSON200.LimitMinor)

		loan := apiclient.CreateLoanJSONRequestBody{LoanNo: "flow-L-1", BorrowerId: borrower, Currency: "CNY", PrincipalMinor: 1_000_000,
			AnnualRateBps: 1000, PenaltyRateBps: 500, LateFeeMinor: 100, StartDate: date(today.AddDate(0, 0, -3)), DueDate: date(today.AddDate(0, 0, 90)),
			InterestMode: apiclient.CreateLoanInputBodyInterestMode("DEALER"), DealerId: borrower}
		l, err := c.CreateLoanWithResponse(ctx, loan)
		require.NoError(t, err)
		status(t, l, l.Body, http.StatusCreated)
		replay, err := c.CreateLoanWithResponse(ctx, loan)
		require.NoError(t, err)
		status(t, replay, replay.Body, http.StatusOK)
		require.Equal(t, l.JSON201.Id, replay.JSON200.Id)
		loanID = l.JSON201.Id
		line2, err := c.GetCreditLineWithResponse(ctx, borrower)
		require.NoError(t, err)
		status(t, line2, line2.Body, http.StatusOK)
		require.Equal(t, int64(1_000_000), line2.JSON200.UsedMinor)

		pay := apiclient.CreateRepaymentJSONRequestBody{Identifier: "flow-r-1", Payer: apiclient.CreateRepaymentInputBodyPayer("DEALER"), AmountMinor: 1000}
		r, err := c.CreateRepaymentWithResponse(ctx, loanID, pay)
		require.NoError(t, err)
		status(t, r, r.Body, http.StatusCreated)
		require.Equal(t, int64(1000), r.JSON201.Allocation.PrincipalMinor)
		rr, err := c.CreateRepaymentWithResponse(ctx, loanID, pay)
		require.NoError(t, err)
		status(t, rr, rr.Body, http.StatusOK)
		require.Equal(t, r.JSON201.Id, rr.JSON200.Id)
		over := pay
		over.Identifier, over.AmountMinor = "flow-r-2", 1_000_000_000
		op, err := c.CreateRepaymentWithResponse(ctx, loanID, over)
		require.NoError(t, err)
		status(t, op, op.Body, http.StatusUnprocessableEntity)
		require.Equal(t, apiclient.ProblemCode("overpayment"), op.ApplicationproblemJSON422.Code)

		reps, err := c.ListRepaymentsWithResponse(ctx, loanID, nil)
		require.NoError(t, err)
		status(t, reps, reps.Body, http.StatusOK)
		require.Len(t, *reps.JSON200.Repayments, 1)
		got, err := c.GetLoanWithResponse(ctx, loanID)
		require.NoError(t, err)
		status(t, got, got.Body, http.StatusOK)
		require.Equal(t, int64(999_000), got.JSON200.PrincipalOutstandingMinor)
		loans, err := c.ListLoansWithResponse(ctx, &apiclient.ListLoansParams{BorrowerId: ptr(borrower)})
		require.NoError(t, err)
		status(t, loans, loans.Body, http.StatusOK)
		require.Len(t, *loans.JSON200.Loans, 1)
		accr, err := c.GetLoanAccrualsWithResponse(ctx, loanID)
		require.NoError(t, err)
		status(t, accr, accr.Body, http.StatusOK)
	})

	t.Run("close of business and collection cases", func(t *testing.T) {
		// A loan of its own borrower, due the day after it starts, closed
		// over three dates before the other loans start: overdue on the
		// third, so its borrower has a case.
		d0 := today.AddDate(0, 0, -20)
		_, err := c.PutCreditLineWithResponse(ctx, "flow-cob", apiclient.PutCreditLineJSONRequestBody{LimitMinor: 10_000_000, Currency: "CNY"})
		require.NoError(t, err)
		l, err := c.CreateLoanWithResponse(ctx, apiclient.CreateLoanJSONRequestBody{LoanNo: "flow-cob-1", BorrowerId: "flow-cob", Currency: "CNY",
			PrincipalMinor: 1_000_000, AnnualRateBps: 1000, PenaltyRateBps: 500, StartDate: date(d0), DueDate: date(d0.AddDate(0, 0, 1)),
			InterestMode: apiclient.CreateLoanInputBodyInterestMode("DEALER"), DealerId: "flow-cob"})
		require.NoError(t, err)
		status(t, l, l.Body, http.StatusCreated)
		for i := range 3 {
			d := date(d0.AddDate(0, 0, i))
			run, err := c.StartCobRunWithResponse(ctx, d)
			require.NoError(t, err)
			status(t, run, run.Body, http.StatusAccepted)
			require.NotNil(t, run.JSON202)
			again, err := c.StartCobRunWithResponse(ctx, d)
			require.NoError(t, err)
			status(t, again, again.Body, http.StatusOK)
			require.Equal(t, run.JSON202.Date, again.JSON200.Date)
			testkit.WaitFor(t, 30*time.Second, "run "+d.String(), func() bool {
				got, err := c.GetCobRunWithResponse(ctx, d)
				require.NoError(t, err)
				status(t, got, got.Body, http.StatusOK)
				require.NotEqual(t, apiclient.COBRunBodyStatus("FAILED"), got.JSON200.Status)
				return got.JSON200.Status == apiclient.COBRunBodyStatus("COMPLETED")
			})
		}
		skipped, err := c.StartCobRunWithResponse(ctx, date(d0.AddDate(0, 0, 5)))
		require.NoError(t, err)
		status(t, skipped, skipped.Body, http.StatusConflict)
		require.Equal(t, apiclient.ProblemCode("date_not_open"), skipped.ApplicationproblemJSON409.Code)
		runs, err := c.ListCobRunsWithResponse(ctx, nil)
		require.NoError(t, err)
		status(t, runs, runs.Body, http.StatusOK)
		require.Len(t, *runs.JSON200.Runs, 3)

		var caseID int64
		testkit.WaitFor(t, 30*time.Second, "flow-cob's collection case", func() bool {
			cases, err := c.ListCasesWithResponse(ctx, &apiclient.ListCasesParams{BorrowerId: ptr("flow-cob")})
			require.NoError(t, err)
			status(t, cases, cases.Body, http.StatusOK)
			if len(*cases.JSON200.Cases) == 0 {
				return false
			}
			caseID = (*cases.JSON200.Cases)[0].Id
			return true
		})
		got, err := c.GetCaseWithResponse(ctx, caseID)
		require.NoError(t, err)
		status(t, got, got.Body, http.StatusOK)
		require.Equal(t, apiclient.CaseBodyStatus("OPEN"), got.JSON200.Status)
		require.Len(t, *got.JSON200.Loans, 1)
	})

	t.Run("events", func(t *testing.T) {
		resp, err := c.ListEventsWithResponse(ctx, &apiclient.ListEventsParams{Type: ptr("order.created"), Limit: ptr(int64(10))})
		require.NoError(t, err)
		status(t, resp, resp.Body, http.StatusOK)
		require.Len(t, *resp.JSON200.Events, 1)
		require.NotEmpty(t, resp.JSON200.NextCursor)
		// A long poll past the end returns at once when an event commits.
		next, err := c.ListEventsWithResponse(ctx, &apiclient.ListEventsParams{After: resp.JSON200.NextCursor, Type: ptr("order.created"), Wait: ptr("0")})
		require.NoError(t, err)
		status(t, next, next.Body, http.StatusOK)
		require.Empty(t, *next.JSON200.Events)
	})

	t.Run("webhooks", func(t *testing.T) {
		created, err := c.CreateWebhookSubscriptionWithResponse(ctx, apiclient.CreateWebhookSubscriptionJSONRequestBody{
			Url: "http://127.0.0.1:9/flow", EventTypes: &[]string{"order.paid"}, Description: ptr("flow")})
		require.NoError(t, err)
		status(t, created, created.Body, http.StatusCreated)
		require.True(t, strings.HasPrefix(created.JSON201.Secret, "whsec_"))
		id := created.JSON201.Id
		list, err := c.ListWebhookSubscriptionsWithResponse(ctx, nil)
		require.NoError(t, err)
		status(t, list, list.Body, http.StatusOK)
		require.Len(t, *list.JSON200.Subscriptions, 1)
		got, err := c.GetWebhookSubscriptionWithResponse(ctx, id)
		require.NoError(t, err)
		status(t, got, got.Body, http.StatusOK)
		deliveries, err := c.ListWebhookDeliveriesWithResponse(ctx, id, nil)
		require.NoError(t, err)
		status(t, deliveries, deliveries.Body, http.StatusOK)
		del, err := c.DeleteWebhookSubscriptionWithResponse(ctx, id)
		require.NoError(t, err)
		status(t, del, del.Body, http.StatusNoContent)
		gone, err := c.GetWebhookSubscriptionWithResponse(ctx, id)
		require.NoError(t, err)
		status(t, gone, gone.Body, http.StatusNotFound)
		require.Equal(t, apiclient.ProblemCode("not_found"), gone.ApplicationproblemJSON404.Code)
	})

	t.Run("batches", func(t *testing.T) {
		items := []map[string]any{
			{"idempotency_key": "flow-batch-je-1", "postings": []map[string]any{{"account": cash, "amount_minor": 7}, {"account": rev, "amount_minor": -7}}},
			{"idempotency_key": "flow-batch-je-2", "postings": []map[string]any{{"account": cash, "amount_minor": 7}, {"account": rev, "amount_minor": -8}}},
		}
		body := apiclient.CreateBatchJSONRequestBody{IdempotencyKey: "flow-batch-1", Operation: apiclient.CreateBatchInputBodyOperation("journal_entry"), Items: &items}
		created, err := c.CreateBatchWithResponse(ctx, body)
		require.NoError(t, err)
		status(t, created, created.Body, http.StatusAccepted)
		require.NotNil(t, created.JSON202)
		replay, err := c.CreateBatchWithResponse(ctx, body)
		require.NoError(t, err)
		status(t, replay, replay.Body, http.StatusOK)
		require.Equal(t, created.JSON202.Id, replay.JSON200.Id)
		id := created.JSON202.Id
		testkit.WaitFor(t, 30*time.Second, "the batch to complete", func() bool {
			got, err := c.GetBatchWithResponse(ctx, id)
			require.NoError(t, err)
			status(t, got, got.Body, http.StatusOK)
			return got.JSON200.Status == apiclient.BatchBodyStatus("COMPLETED")
		})
		its, err := c.ListBatchItemsWithResponse(ctx, id, nil)
		require.NoError(t, err)
		status(t, its, its.Body, http.StatusOK)
		require.Len(t, *its.JSON200.Items, 2)
		require.Nil(t, (*its.JSON200.Items)[0].Error)
		require.NotNil(t, (*its.JSON200.Items)[1].Error, "an unbalanced entry fails alone")
		require.Equal(t, "validation_failed", (*its.JSON200.Items)[1].Error.Code)
		cancel, err := c.CancelBatchWithResponse(ctx, id)
		require.NoError(t, err)
		status(t, cancel, cancel.Body, http.StatusConflict)
		require.Equal(t, apiclient.ProblemCode("invalid_transition"), cancel.ApplicationproblemJSON409.Code)
	})

	t.Run("dead letters", func(t *testing.T) {
		// A repayment on a frozen line: its credit.restore fails, and with
		// one attempt allowed River discards it, a dead letter.
		frozen := apiclient.PutCreditLineJSONRequestBody{LimitMinor: 10_000_000, Currency: "CNY", Frozen: ptr(true)}
		line, err := c.PutCreditLineWithResponse(ctx, borrower, frozen)
		require.NoError(t, err)
		status(t, line, line.Body, http.StatusOK)
		r, err := c.CreateRepaymentWithResponse(ctx, loanID, apiclient.CreateRepaymentJSONRequestBody{Identifier: "flow-r-frozen",
			Payer: apiclient.CreateRepaymentInputBodyPayer("DEALER"), AmountMinor: 2000})
		require.NoError(t, err)
		status(t, r, r.Body, http.StatusCreated)
		var jobID int64
		testkit.WaitFor(t, 30*time.Second, "credit.restore to be discarded", func() bool {
			list, err := c.ListDeadLettersWithResponse(ctx, &apiclient.ListDeadLettersParams{Kind: ptr("credit.restore")})
			require.NoError(t, err)
			status(t, list, list.Body, http.StatusOK)
			if len(*list.JSON200.DeadLetters) == 0 {
				return false
			}
			jobID = (*list.JSON200.DeadLetters)[0].Id
			return true
		})
		got, err := c.GetDeadLetterWithResponse(ctx, jobID)
		require.NoError(t, err)
		status(t, got, got.Body, http.StatusOK)
		require.Equal(t, apiclient.DeadLetterBodyState("discarded"), got.JSON200.State)
		require.NotEmpty(t, *got.JSON200.Errors)

		frozen.Frozen = ptr(false)
		_, err = c.PutCreditLineWithResponse(ctx, borrower, frozen)
		require.NoError(t, err)
		retried, err := c.RetryDeadLetterWithResponse(ctx, jobID)
		require.NoError(t, err)
		status(t, retried, retried.Body, http.StatusOK)
		testkit.WaitFor(t, 30*time.Second, "the principal to be restored", func() bool {
			line, err := c.GetCreditLineWithResponse(ctx, borrower)
			require.NoError(t, err)
			return line.JSON200.UsedMinor == 1_000_000-1000-2000
		})
		again, err := c.RetryDeadLetterWithResponse(ctx, jobID)
		require.NoError(t, err)
		require.Contains(t, []int{http.StatusConflict, http.StatusNotFound}, again.StatusCode(), "body: %s", again.Body)
		if again.StatusCode() == http.StatusConflict {
			require.Equal(t, apiclient.ProblemCode("not_discarded"), again.ApplicationproblemJSON409.Code)
		}
	})
}
