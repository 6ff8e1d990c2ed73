package testkit

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"riverbank/internal/config"
	"riverbank/internal/server"
	"riverbank/internal/testdb"
)

// ServerToken is the API token of a Serve process.
const ServerToken = "testkit-server-token-0123456789"

// Server is a running riverbank process (internal/server: the HTTP API,
// River with every worker and periodic job, the River UI) on a database
// of the test's own, listening on a loopback port.
type Server struct {
	// URL is the process's base URL, e.g. http://127.0.0.1:41234.
	URL string
	// Token is a valid bearer token (ServerToken).
	Token string
	// Pool is the process's own pool, for assertions in SQL.
	Pool *pgxpool.Pool
}

// Serve runs the process until the test ends, with Config's configuration
// (the automatic close of business off, a webhook key set), a token, and
// changes made by configure (may be nil).
func Serve(t testing.TB, configure func(cfg *config.Config)) *Server {
	t.Helper()
	dsn, _ := testdb.NewDB(t)
	cfg := Config(t)
	cfg.DatabaseURL = dsn
	cfg.Addr = "127.0.0.1:0"
	cfg.APITokens = []string{ServerToken}
	cfg.ShutdownTimeout = 10 * time.Second
	if configure != nil {
		configure(cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	app, err := server.New(ctx, cfg, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	require.NoError(t, app.Listen())
	done := make(chan error, 1)
	go func() { done <- app.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("testkit: the server did not stop within 30s")
		}
	})
	select {
	case <-app.Ready():
	case err := <-done:
		t.Fatalf("testkit: the server stopped before it was ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("testkit: the server was not ready within 30s")
	}
	return &Server{URL: app.BaseURL(), Token: ServerToken, Pool: app.Pool()}
}
