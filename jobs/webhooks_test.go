package jobs_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"

	"riverbank/internal/db"
	"riverbank/internal/webhook"
	"riverbank/jobs"
)

// TestWebhookDispatchSnoozesWhileDatabaseDown: a database outage mid-run
// would spend webhook.dispatch's few attempts and discard it; it snoozes
// instead (no attempt spent) and runs again a second later.
func TestWebhookDispatchSnoozesWhileDatabaseDown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	// Nothing listens on port 1: every connection attempt is refused.
	cfg, err := pgxpool.ParseConfig("postgres://postgres@127.0.0.1:1/riverbank?sslmode=disable&connect_timeout=2")
	require.NoError(t, err)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	require.NoError(t, err)
	defer pool.Close()
	w := &jobs.WebhookDispatchWorker{Webhooks: webhook.NewService(db.NewStore(pool, nil), webhook.Options{})}
	err = w.Work(ctx, &river.Job[webhook.DispatchArgs]{})
	var snooze *river.JobSnoozeError
	require.True(t, errors.As(err, &snooze), "want a snooze, got %v", err)
	require.Equal(t, time.Second, snooze.Duration)
}
