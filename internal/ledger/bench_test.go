package ledger_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/internal/db"
	"riverbank/internal/ledger"
)

// BenchmarkApplyBatch measures draining one hot account: 20,000 pending
// postings (written outside the timer, 50 per entry against a sink account)
// applied by ApplyBatchTx loops of ledger.ApplyBatchSize until a batch comes
// back empty. It reports postings applied per second.
//
//	TEST_DATABASE_URL=... go test ./internal/ledger -run '^$' -bench ApplyBatch -benchtime 3x
func BenchmarkApplyBatch(b *testing.B) {
	const (
		postings = 20_000
		perEntry = 50 // hot postings per entry; the entry has as many sink postings
	)
	bundle := setupDB(b)
	var (
		applied int
		elapsed time.Duration
	)
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		hot := bundle.createAccount(b, fmt.Sprintf("bench:hot:%d", i), "ASSET", "CNY")
		sink := bundle.createAccount(b, fmt.Sprintf("bench:sink:%d", i), "LIABILITY", "CNY")
		err := bundle.store.InTx(bundle.ctx, func(tx *db.Tx) error {
			for e := range postings / perEntry {
				in := ledger.EntryInput{IdempotencyKey: fmt.Sprintf("bench-%d-%d", i, e)}
				for k := range perEntry {
					amount := int64(k + 1)
					in.Postings = append(in.Postings, ledger.PostingInput{Account: hot.Code, AmountMinor: amount}, ledger.PostingInput{Account: sink.Code, AmountMinor: -amount})
				}
				if _, _, err := ledger.PostTx(bundle.ctx, tx, in); err != nil {
					return err
				}
			}
			return nil
		})
		require.NoError(b, err)
		b.StartTimer()

		start := time.Now()
		for {
			res, err := db.InTxV(bundle.ctx, bundle.store, func(tx *db.Tx) (ledger.ApplyResult, error) {
				return ledger.ApplyBatchTx(bundle.ctx, tx, hot.ID, ledger.ApplyBatchSize)
			})
			require.NoError(b, err)
			applied += res.Applied
			if res.Applied < ledger.ApplyBatchSize {
				break
			}
		}
		elapsed += time.Since(start)
	}
	b.ReportMetric(float64(applied)/elapsed.Seconds(), "postings/s")
}
