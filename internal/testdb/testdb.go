// Package testdb gives tests a real Postgres: TEST_DATABASE_URL if set, else
// a private cluster from the local Postgres binaries, else a testcontainers
// Postgres when Docker works, else every test that asks is skipped with the
// reason. Schema is applied once into a template database keyed by the
// schema's content, which every package (and every later run) reuses; a
// test gets either its own database cloned from it (committed data, running
// workers) or a transaction on a shared clone that is rolled back.
package testdb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/pgcluster"
)

var (
	state struct {
		serverURL  string // admin URL of the server (any database)
		template   string // migrated template database
		skipReason string
		cluster    *pgcluster.Cluster
		clusterDir string // temp directory of the private cluster, removed at teardown
	}
	sharedOnce sync.Once
	sharedPool *pgxpool.Pool
	sharedErr  error
)

// Main runs a package's tests with a database server available. Call it
// from TestMain: func TestMain(m *testing.M) { testdb.Main(m) }.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main for a TestMain that has cleanup of its own to do after the
// tests: it returns the exit code instead of exiting.
func Run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	setup(ctx)
	cancel()
	defer teardown()
	return m.Run()
}

func setup(ctx context.Context) {
	if u := os.Getenv("TEST_DATABASE_URL"); u != "" {
		state.serverURL = u
	} else {
		dir, err := os.MkdirTemp("", "riverbank-testpg-")
		if err != nil {
			state.skipReason = "create temp dir: " + err.Error()
			return
		}
		_ = os.Chmod(dir, 0o755)
		state.clusterDir = dir
		c, err := pgcluster.StartAny(ctx, pgcluster.Options{DataDir: filepath.Join(dir, "pgdata"), Database: "postgres"})
		if err != nil {
			state.skipReason = "no test database: set TEST_DATABASE_URL, or install Postgres or Docker: " + err.Error()
			return
		}
		state.cluster = c
		state.serverURL = c.URL
	}
	tpl, err := ensureTemplate(ctx, state.serverURL)
	if err != nil {
		// A configured database that fails is an error, not a skip.
		fmt.Fprintln(os.Stderr, "testdb: prepare template database:", err)
		os.Exit(1)
	}
	state.template = tpl
}

func teardown() {
	if sharedPool != nil {
		sharedPool.Close()
	}
	if state.cluster != nil {
		_ = state.cluster.Stop(context.Background())
	}
	if state.clusterDir != "" {
		_ = os.RemoveAll(state.clusterDir)
	} else if state.serverURL != "" && sharedName != "" {
		dropDatabase(context.Background(), state.serverURL, sharedName)
	}
}

// withDatabase returns the server URL pointed at another database.
func withDatabase(serverURL, name string) string {
	u, err := url.Parse(serverURL)
	if err != nil {
		return serverURL
	}
	u.Path = "/" + name
	return u.String()
}

// ensureTemplate creates (once per schema content) a migrated template
// database. Concurrent test processes serialise on an advisory lock.
func ensureTemplate(ctx context.Context, serverURL string) (string, error) {
	sum := sha256.Sum256([]byte(riverbank.SchemaSQL + "|river-migrations"))
	name := "riverbank_tpl_" + hex.EncodeToString(sum[:6])

	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", redact(serverURL), err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock(727274)"); err != nil {
		return "", err
	}
	defer admin.Exec(context.Background(), "SELECT pg_advisory_unlock(727274)") //nolint:errcheck

	var ready bool
	err = admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate)", name).Scan(&ready)
	if err != nil {
		return "", err
	}
	if ready {
		return name, nil
	}
	// A half-built template from a crashed run is rebuilt.
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", err
	}
	pool, err := pgxpool.New(ctx, withDatabase(serverURL, name))
	if err != nil {
		return "", err
	}
	m, err := db.NewMigrator(pool)
	if err == nil {
		_, err = m.Migrate(ctx)
	}
	pool.Close()
	if err != nil {
		return "", fmt.Errorf("migrate template: %w", err)
	}
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" WITH is_template true"); err != nil {
		return "", err
	}
	// Templates of other schema versions are dropped once they are a day
	// old: younger ones may be in use by test runs of another checkout (a
	// branch with another schema) on the same server, whose databases a
	// forced drop would kill mid-test. A database's age is its PG_VERSION
	// file's (written by CREATE DATABASE); reading it needs a superuser, and
	// without one nothing is dropped.
	rows, err := admin.Query(ctx, `SELECT datname FROM pg_database
WHERE datname LIKE 'riverbank\_tpl\_%' AND datname <> $1
  AND (pg_stat_file('base/' || oid || '/PG_VERSION')).modification < now() - interval '1 day'`, name)
	if err == nil {
		old, _ := pgx.CollectRows(rows, pgx.RowTo[string])
		for _, o := range old {
			_, _ = admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{o}.Sanitize()+" WITH is_template false")
			_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{o}.Sanitize()+" WITH (FORCE)")
		}
	}
	return name, nil
}

func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(unparseable URL)"
	}
	return p.Redacted()
}

func randomName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

func requireServer(t testing.TB) {
	t.Helper()
	if state.skipReason != "" {
		t.Skip(state.skipReason)
	}
	if state.template == "" {
		t.Fatal("testdb: call testdb.Main(m) from the package's TestMain")
	}
}

func createDatabase(ctx context.Context, name string) (string, error) {
	admin, err := pgx.Connect(ctx, state.serverURL)
	if err != nil {
		return "", err
	}
	defer admin.Close(ctx)
	var lastErr error
	for range 20 {
		_, lastErr = admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{state.template}.Sanitize())
		if lastErr == nil {
			return withDatabase(state.serverURL, name), nil
		}
		// Another process may be copying the template at this instant.
		if !strings.Contains(lastErr.Error(), "being accessed by other users") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "", fmt.Errorf("create database from template: %w", lastErr)
}

func dropDatabase(ctx context.Context, serverURL, name string) {
	admin, err := pgx.Connect(ctx, serverURL)
	if err != nil {
		return
	}
	defer admin.Close(ctx)
	_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
}

// NewDB returns the URL of and a pool on a new database, cloned from the
// migrated template, that is dropped when the test ends. Use it for tests
// that commit data or run River workers.
func NewDB(t testing.TB) (string, *pgxpool.Pool) {
	t.Helper()
	requireServer(t)
	ctx := context.Background()
	name := randomName("riverbank_t_")
	dsn, err := createDatabase(ctx, name)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatalf("testdb: open pool: %v", err)
	}
	t.Cleanup(func() {
		pool.Close()
		dropDatabase(context.Background(), state.serverURL, name)
	})
	return dsn, pool
}

var sharedName string

// Tx returns a transaction on a database shared by the package's tests; it
// is rolled back when the test ends, so tests never see each other's
// writes.
func Tx(t testing.TB) pgx.Tx {
	t.Helper()
	requireServer(t)
	sharedOnce.Do(func() {
		sharedName = randomName("riverbank_shared_")
		dsn, err := createDatabase(context.Background(), sharedName)
		if err != nil {
			sharedErr = err
			return
		}
		sharedPool, sharedErr = pgxpool.New(context.Background(), dsn)
	})
	if sharedErr != nil {
		t.Fatalf("testdb: shared database: %v", sharedErr)
	}
	tx, err := sharedPool.Begin(context.Background())
	if err != nil {
		t.Fatalf("testdb: begin: %v", err)
	}
	t.Cleanup(func() { _ = tx.Rollback(context.Background()) })
	return tx
}

// ServerURL returns the admin URL of the test server (for tests that create
// databases of their own), skipping the test when there is none.
func ServerURL(t testing.TB) string {
	t.Helper()
	requireServer(t)
	return state.serverURL
}
