package jobs_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/jobs"
)

func TestClientIDNamesTheProcess(t *testing.T) {
	t.Parallel()
	started := time.Date(2026, 5, 1, 12, 30, 15, 123456000, time.UTC)
	id := jobs.ClientID(started)
	require.Contains(t, id, fmt.Sprintf("_p%d_", os.Getpid()), "the pid tells instances on one host apart")
	require.True(t, strings.HasSuffix(id, "_2026_05_01T12_30_15_123456"), "start time as River formats it: %s", id)
	require.NotContains(t, id, ".")
	require.Less(t, len(id), 128, "river_leader.leader_id must be under 128 characters")
	require.NotEqual(t, id, jobs.ClientID(started.Add(time.Microsecond)), "a restarted process gets a new id")
}
