package pgcluster_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"riverbank/internal/pgcluster"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func requireBinaries(t *testing.T) {
	t.Helper()
	if _, err := pgcluster.FindBinaries(); err != nil {
		require.ErrorIs(t, err, pgcluster.ErrNoBinaries)
		t.Skipf("no local PostgreSQL: %v", err)
	}
}

func ping(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	defer conn.Close(ctx)
	var one int
	require.NoError(t, conn.QueryRow(ctx, "SELECT 1").Scan(&one))
	require.Equal(t, 1, one)
}

func TestFindBinaries(t *testing.T) {
	t.Parallel()
	requireBinaries(t)
	dir, err := pgcluster.FindBinaries()
	require.NoError(t, err)
	for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
		require.FileExists(t, filepath.Join(dir, name))
	}
}

func TestStartReuseStop(t *testing.T) {
	t.Parallel()
	requireBinaries(t)
	ctx := context.Background()

	// t.TempDir() is 0700; under root the server runs as "postgres" and
	// Start grants it the search bit on the parents itself.
	dataDir := filepath.Join(t.TempDir(), "state", "pgdata")
	opts := pgcluster.Options{DataDir: dataDir, Logger: testLogger(t), Database: "riverbank_test"}

	begin := time.Now()
	c, err := pgcluster.Start(ctx, opts)
	require.NoError(t, err)
	t.Logf("Start (new cluster) took %s", time.Since(begin))
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	require.Equal(t, pgcluster.KindLocal, c.Kind)
	require.Contains(t, c.URL, "@127.0.0.1:"+strconv.Itoa(c.Port)+"/riverbank_test?sslmode=disable")
	require.FileExists(t, filepath.Join(dataDir, "PG_VERSION"))
	ping(t, ctx, c.URL)

	// Leave a marker to prove the data survives a restart.
	conn, err := pgx.Connect(ctx, c.URL)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE TABLE marker (v int); INSERT INTO marker VALUES (42)")
	require.NoError(t, err)
	require.NoError(t, conn.Close(ctx))

	require.NoError(t, c.Stop(ctx))
	require.NoError(t, c.Stop(ctx), "second Stop must be a no-op")
	require.NoFileExists(t, filepath.Join(dataDir, "postmaster.pid"))

	begin = time.Now()
	c2, err := pgcluster.Start(ctx, opts)
	require.NoError(t, err)
	t.Logf("Start (reused cluster) took %s", time.Since(begin))
	t.Cleanup(func() { _ = c2.Stop(context.Background()) })
	ping(t, ctx, c2.URL)
	conn, err = pgx.Connect(ctx, c2.URL)
	require.NoError(t, err)
	var v int
	require.NoError(t, conn.QueryRow(ctx, "SELECT v FROM marker").Scan(&v))
	require.Equal(t, 42, v)
	require.NoError(t, conn.Close(ctx))
	require.NoError(t, c2.Stop(ctx))
	require.NoError(t, c2.Stop(ctx))
}

func TestStartThrowaway(t *testing.T) {
	t.Parallel()
	requireBinaries(t)
	ctx := context.Background()

	c, err := pgcluster.Start(ctx, pgcluster.Options{Logger: testLogger(t)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	require.True(t, strings.HasSuffix(c.URL, "/riverbank?sslmode=disable"), c.URL)
	ping(t, ctx, c.URL)

	require.NoError(t, c.Stop(ctx))
	_, err = os.Stat(filepath.Dir(c.DataDir))
	require.ErrorIs(t, err, os.ErrNotExist, "throwaway cluster directory must be removed")
	require.NoError(t, c.Stop(ctx))
}

// StopServer and StartServer play a database outage: the server goes
// away, refusing connections, and comes back on the same port with its data.
func TestStopServerStartServer(t *testing.T) {
	t.Parallel()
	requireBinaries(t)
	ctx := context.Background()

	c, err := pgcluster.Start(ctx, pgcluster.Options{Logger: testLogger(t)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	conn, err := pgx.Connect(ctx, c.URL)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, "CREATE TABLE marker (v int); INSERT INTO marker VALUES (7)")
	require.NoError(t, err)

	require.NoError(t, c.StopServer(ctx))
	require.NoError(t, c.StopServer(ctx), "StopServer on a stopped server is a no-op")
	_, err = conn.Exec(ctx, "SELECT 1")
	require.Error(t, err, "the open session was terminated")
	_, err = pgx.Connect(ctx, c.URL)
	require.ErrorContains(t, err, "connection refused")
	require.DirExists(t, c.DataDir, "the data dir is kept")

	require.NoError(t, c.StartServer(ctx))
	require.NoError(t, c.StartServer(ctx), "StartServer on a running server is a no-op")
	conn, err = pgx.Connect(ctx, c.URL)
	require.NoError(t, err)
	var v int
	require.NoError(t, conn.QueryRow(ctx, "SELECT v FROM marker").Scan(&v))
	require.Equal(t, 7, v, "same port, same data")
	require.NoError(t, conn.Close(ctx))

	require.NoError(t, c.StopServer(ctx))
	require.NoError(t, c.Stop(ctx), "Stop after StopServer cleans up")
	_, err = os.Stat(filepath.Dir(c.DataDir))
	require.ErrorIs(t, err, os.ErrNotExist, "throwaway cluster directory must be removed")
	require.Error(t, c.StartServer(ctx), "StartServer after Stop")
}

// A server left running on the data dir (e.g. by a killed `riverbank dev`)
// is restarted on the new port; a stale postmaster.pid is cleared.
func TestStartTakesOverRunningAndStale(t *testing.T) {
	t.Parallel()
	requireBinaries(t)
	ctx := context.Background()
	dataDir := filepath.Join(t.TempDir(), "pgdata")
	opts := pgcluster.Options{DataDir: dataDir, Logger: testLogger(t)}

	orphan, err := pgcluster.Start(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = orphan.Stop(context.Background()) })

	// Start again without stopping: the orphan is replaced.
	c, err := pgcluster.Start(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	ping(t, ctx, c.URL)
	// Stopping the replaced cluster must not stop its successor.
	require.NoError(t, orphan.Stop(ctx))
	ping(t, ctx, c.URL)
	require.NoError(t, c.Stop(ctx))

	// A postmaster.pid naming a dead process, as after a crash.
	pidFile := filepath.Join(dataDir, "postmaster.pid")
	require.NoError(t, os.WriteFile(pidFile, []byte("999999\n"+dataDir+"\n0\n5432\n"), 0o600))
	c, err = pgcluster.Start(ctx, opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	ping(t, ctx, c.URL)
	require.NoError(t, c.Stop(ctx))
}

func TestStartRefusesNonEmptyNonCluster(t *testing.T) {
	t.Parallel()
	requireBinaries(t)
	dataDir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dataDir, "precious.txt"), []byte("x"), 0o600))
	_, err := pgcluster.Start(context.Background(), pgcluster.Options{DataDir: dataDir})
	require.ErrorContains(t, err, "holds no PostgreSQL cluster")
	require.FileExists(t, filepath.Join(dataDir, "precious.txt"))
}

func TestStartDockerFailsFastWithoutEngine(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	begin := time.Now()
	c, err := pgcluster.StartDocker(ctx, pgcluster.Options{Logger: testLogger(t)})
	took := time.Since(begin)
	if err == nil {
		require.NoError(t, c.Stop(ctx))
		t.Skip("a Docker engine is available")
	}
	if !errors.Is(err, pgcluster.ErrNoDocker) {
		t.Skipf("Docker engine present but starting failed: %v", err)
	}
	t.Logf("StartDocker failed in %s: %v", took, err)
	require.Less(t, took, 2500*time.Millisecond)
}
