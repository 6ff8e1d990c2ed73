package db_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"riverbank/internal/db"
	"riverbank/internal/testdb"
)

// IsUnavailable is judged on errors real Postgres and pgx produce: every
// way a connection can fail or go away is "unavailable" (503, retry later);
// errors that are the statement's own are not.
func TestIsUnavailable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn, pool := testdb.NewDB(t)

	// terminated opens a connection, has the server terminate its session
	// (what a fast shutdown, a crash or a failover does to every session)
	// and returns it.
	terminated := func(t *testing.T, begin bool) (*pgx.Conn, pgx.Tx) {
		t.Helper()
		conn, err := pgx.Connect(ctx, dsn)
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
		var tx pgx.Tx
		if begin {
			tx, err = conn.Begin(ctx)
			require.NoError(t, err)
			_, err = tx.Exec(ctx, "SELECT 1")
			require.NoError(t, err)
		}
		_, err = pool.Exec(ctx, "SELECT pg_terminate_backend($1)", conn.PgConn().PID())
		require.NoError(t, err)
		return conn, tx
	}

	t.Run("ConnectionRefused", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		require.NoError(t, ln.Close())
		_, err = pgx.Connect(ctx, "postgres://postgres@"+addr+"/x?sslmode=disable&connect_timeout=5")
		require.Error(t, err)
		require.True(t, db.IsUnavailable(err), "%v", err)
	})

	t.Run("PoolCannotConnect", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		require.NoError(t, ln.Close())
		p, err := pgxpool.New(ctx, "postgres://postgres@"+addr+"/x?sslmode=disable&connect_timeout=5")
		require.NoError(t, err)
		defer p.Close()
		_, err = db.New(p).JobCountsByQueueState(ctx)
		require.Error(t, err)
		require.True(t, db.IsUnavailable(err), "%v", err)
		_, err = p.Begin(ctx)
		require.True(t, db.IsUnavailable(err), "%v", err)
	})

	t.Run("SessionTerminated", func(t *testing.T) {
		t.Parallel()
		conn, _ := terminated(t, false)
		_, err := conn.Exec(ctx, "SELECT 1")
		require.Error(t, err)
		require.True(t, db.IsUnavailable(err), "first use: %v", err)
		_, err = conn.Exec(ctx, "SELECT 1")
		require.Error(t, err)
		require.True(t, db.IsUnavailable(err), "later use of the closed connection: %v", err)
	})

	t.Run("BrokenMidTransaction", func(t *testing.T) {
		t.Parallel()
		_, tx := terminated(t, true)
		_, err := tx.Exec(ctx, "SELECT 2")
		require.Error(t, err)
		require.True(t, db.IsUnavailable(err), "statement: %v", err)
		err = tx.Commit(ctx)
		require.Error(t, err)
		require.True(t, db.IsUnavailable(err), "commit: %v", err)
	})

	t.Run("StoreTransactionOnTerminatedSession", func(t *testing.T) {
		t.Parallel()
		conn, _ := terminated(t, false)
		err := db.NewStore(conn, nil).InTx(ctx, func(tx *db.Tx) error {
			_, err := tx.Tx.Exec(ctx, "SELECT 1")
			return err
		})
		require.Error(t, err)
		require.True(t, db.IsUnavailable(err), "%v", err)
	})

	// The database did not answer within the caller's deadline: for the
	// caller that is unavailability (retry later), whatever the cause.
	t.Run("DeadlinePassed", func(t *testing.T) {
		t.Parallel()
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		_, err := pool.Exec(short, "SELECT pg_sleep(5)")
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.True(t, db.IsUnavailable(err), "%v", err)
		short2, cancel2 := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel2()
		// Every connection taken: waiting for one ends at the deadline.
		small, err := pgxpool.New(ctx, dsn+"&pool_max_conns=1")
		require.NoError(t, err)
		defer small.Close()
		held, err := small.Acquire(ctx)
		require.NoError(t, err)
		defer held.Release()
		_, err = small.Begin(short2)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.True(t, db.IsUnavailable(err), "pool acquire timed out: %v", err)
	})

	t.Run("NotUnavailable", func(t *testing.T) {
		t.Parallel()
		require.False(t, db.IsUnavailable(nil))
		_, err := pool.Exec(ctx, "SELEC 1")
		require.Error(t, err)
		require.False(t, db.IsUnavailable(err), "syntax error: %v", err)
		_, err = pool.Exec(ctx, "CREATE TEMP TABLE u (k int PRIMARY KEY); INSERT INTO u VALUES (1), (1)")
		require.Error(t, err)
		require.False(t, db.IsUnavailable(err), "unique violation: %v", err)
		_, err = pool.Exec(ctx, "SELECT 1/0")
		require.False(t, db.IsUnavailable(err), "division by zero: %v", err)
		// A statement cancelled because its caller went away says nothing
		// about the database.
		cancelled, cancel := context.WithCancel(ctx)
		go func() { time.Sleep(50 * time.Millisecond); cancel() }()
		_, err = pool.Exec(cancelled, "SELECT pg_sleep(5)")
		require.ErrorIs(t, err, context.Canceled)
		require.False(t, db.IsUnavailable(err), "cancelled: %v", err)
		require.False(t, db.IsUnavailable(errors.New("some other failure")))
	})
}
