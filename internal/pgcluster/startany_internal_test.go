package pgcluster

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNothingInstalledError(t *testing.T) {
	t.Parallel()
	err := error(&nothingInstalledError{
		local:  fmt.Errorf("pgcluster: %w", ErrNoBinaries),
		docker: fmt.Errorf("pgcluster: %w: no socket", ErrNoDocker),
	})
	require.ErrorIs(t, err, ErrNoBinaries)
	require.ErrorIs(t, err, ErrNoDocker)
	require.True(t, errors.Is(err, ErrNoDocker))
	require.Contains(t, err.Error(), "apt-get install postgresql")
	require.Contains(t, err.Error(), "brew install postgresql@16")
	require.Contains(t, err.Error(), "DATABASE_URL")
}
