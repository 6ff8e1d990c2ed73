package db_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/stretchr/testify/require"

	"riverbank/internal/db"
	"riverbank/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// probeArgs is a job the transaction test inserts next to a row.
type probeArgs struct {
	RowID int64 `json:"row_id"`
}

func (probeArgs) Kind() string { return "test.probe" }

type probeWorker struct {
	river.WorkerDefaults[probeArgs]
	pool *pgxpool.Pool
}

func (w *probeWorker) Work(ctx context.Context, job *river.Job[probeArgs]) error {
	_, err := w.pool.Exec(ctx, "UPDATE tx_probe SET worked = true WHERE id = $1", job.Args.RowID)
	return err
}

type txTestBundle struct {
	pool   *pgxpool.Pool
	client *river.Client[pgx.Tx]
	store  *db.Store
}

func setupTxTest(t *testing.T) *txTestBundle {
	t.Helper()
	_, pool := testdb.NewDB(t)
	_, err := pool.Exec(context.Background(), "CREATE TABLE tx_probe (id bigint PRIMARY KEY, worked boolean NOT NULL DEFAULT false)")
	require.NoError(t, err)
	workers := river.NewWorkers()
	river.AddWorker(workers, &probeWorker{pool: pool})
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
		Queues:        map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: 2}},
		Workers:       workers,
		FetchCooldown: 10 * time.Millisecond,
		TestOnly:      true,
	})
	require.NoError(t, err)
	return &txTestBundle{pool: pool, client: client, store: db.NewStore(pool, client)}
}

func countJobs(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM river_job WHERE kind = 'test.probe'").Scan(&n))
	return n
}

func TestInTx(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("RollbackDiscardsRowAndJob", func(t *testing.T) {
		t.Parallel()
		b := setupTxTest(t)
		err := b.store.InTx(ctx, func(tx *db.Tx) error {
			if _, err := tx.Tx.Exec(ctx, "INSERT INTO tx_probe (id) VALUES (1)"); err != nil {
				return err
			}
			if _, err := tx.Insert(ctx, probeArgs{RowID: 1}, nil); err != nil {
				return err
			}
			return context.DeadlineExceeded // any error rolls back
		})
		require.ErrorIs(t, err, context.DeadlineExceeded)
		var rows int
		require.NoError(t, b.pool.QueryRow(ctx, "SELECT count(*) FROM tx_probe").Scan(&rows))
		require.Zero(t, rows)
		require.Zero(t, countJobs(t, b.pool))
	})

	t.Run("CommitKeepsBothAndWorkerRuns", func(t *testing.T) {
		t.Parallel()
		b := setupTxTest(t)
		err := b.store.InTx(ctx, func(tx *db.Tx) error {
			if _, err := tx.Tx.Exec(ctx, "INSERT INTO tx_probe (id) VALUES (7)"); err != nil {
				return err
			}
			_, err := tx.InsertMany(ctx, []river.InsertManyParams{{Args: probeArgs{RowID: 7}}})
			return err
		})
		require.NoError(t, err)
		require.Equal(t, 1, countJobs(t, b.pool))

		completed, cancel := b.client.Subscribe(river.EventKindJobCompleted)
		defer cancel()
		require.NoError(t, b.client.Start(ctx))
		t.Cleanup(func() { require.NoError(t, b.client.Stop(context.Background())) })
		select {
		case ev := <-completed:
			require.Equal(t, "test.probe", ev.Job.Kind)
		case <-time.After(10 * time.Second):
			t.Fatal("job was not worked within 10s")
		}
		var worked bool
		require.NoError(t, b.pool.QueryRow(ctx, "SELECT worked FROM tx_probe WHERE id = 7").Scan(&worked))
		require.True(t, worked)
	})

	t.Run("NestedInCallerTransaction", func(t *testing.T) {
		t.Parallel()
		b := setupTxTest(t)
		outer, err := b.pool.Begin(ctx)
		require.NoError(t, err)
		inner := db.NewStore(outer, b.client)
		require.NoError(t, inner.InTx(ctx, func(tx *db.Tx) error {
			_, err := tx.Insert(ctx, probeArgs{RowID: 9}, nil)
			return err
		}))
		// The savepoint released, but the caller rolls back: nothing stays.
		require.NoError(t, outer.Rollback(ctx))
		require.Zero(t, countJobs(t, b.pool))
	})
}

func TestInTxV(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setupTxTest(t)
	got, err := db.InTxV(ctx, b.store, func(tx *db.Tx) (int, error) {
		var n int
		err := tx.Tx.QueryRow(ctx, "SELECT 41 + 1").Scan(&n)
		return n, err
	})
	require.NoError(t, err)
	require.Equal(t, 42, got)
}

// TestInTxIsReadCommitted: a server (or role, or database) whose default
// isolation is REPEATABLE READ must not change InTx's transactions, whose
// handoff protocols need a fresh snapshot per statement.
func TestInTxIsReadCommitted(t *testing.T) {
	t.Parallel()
	_, pool := testdb.NewDB(t)
	ctx := context.Background()
	cfg := pool.Config().Copy()
	cfg.ConnConfig.RuntimeParams["default_transaction_isolation"] = "repeatable read"
	rr, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer rr.Close()
	var def string
	require.NoError(t, rr.QueryRow(ctx, "SHOW default_transaction_isolation").Scan(&def))
	require.Equal(t, "repeatable read", def)
	store := db.NewStore(rr, nil)
	var got string
	require.NoError(t, store.InTx(ctx, func(tx *db.Tx) error {
		return tx.Tx.QueryRow(ctx, "SHOW transaction_isolation").Scan(&got)
	}))
	require.Equal(t, "read committed", got)
}
