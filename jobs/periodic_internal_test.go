package jobs

import (
	"testing"

	"github.com/riverqueue/river"
	"github.com/stretchr/testify/require"
)

type oneAttemptArgs struct{}

func (oneAttemptArgs) Kind() string                 { return "test.one_attempt" }
func (oneAttemptArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{MaxAttempts: 1} }

type twoAttemptArgs struct{}

func (twoAttemptArgs) Kind() string                 { return "test.two_attempts" }
func (twoAttemptArgs) InsertOpts() river.InsertOpts { return river.InsertOpts{MaxAttempts: 2} }

// TestAddPeriodicNeedsARetry: a periodic job cut off by a crash is rescued
// by River with one attempt spent; with a single attempt the rescuer
// discards it (a dead letter behind every crash, as webhook.dispatch left
// in TestCrashKill9UnderLoad), so registration refuses it. Every job of
// the real registration passes (NewRegistration is built in every jobs
// test).
func TestAddPeriodicNeedsARetry(t *testing.T) {
	t.Parallel()
	var periodic []*river.PeriodicJob
	err := addPeriodic(&periodic, river.PeriodicInterval(1), oneAttemptArgs{}, river.PeriodicJobOpts{ID: "one"})
	require.ErrorContains(t, err, "periodic job one: MaxAttempts 1")
	require.Empty(t, periodic)
	require.NoError(t, addPeriodic(&periodic, river.PeriodicInterval(1), twoAttemptArgs{}, river.PeriodicJobOpts{ID: "two"}))
	require.Len(t, periodic, 1)
}
