package db_test

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/testdb"
)

func TestParseSteps(t *testing.T) {
	t.Parallel()

	t.Run("EmbeddedSchemaParses", func(t *testing.T) {
		t.Parallel()
		steps, err := db.ParseSteps(riverbank.SchemaSQL)
		require.NoError(t, err)
		require.NotEmpty(t, steps)
		for i, s := range steps {
			require.Equal(t, i+1, s.Version)
			require.NotEmpty(t, s.SQL)
			require.Len(t, s.Checksum, 64)
		}
	})
	t.Run("GapIsRejected", func(t *testing.T) {
		t.Parallel()
		_, err := db.ParseSteps("-- riverbank:step 1 a\nSELECT 1;\n-- riverbank:step 3 c\nSELECT 3;\n")
		require.ErrorContains(t, err, "step 3 found where step 2 was expected")
	})
	t.Run("NoHeadersIsRejected", func(t *testing.T) {
		t.Parallel()
		_, err := db.ParseSteps("CREATE TABLE x (id int);")
		require.Error(t, err)
	})
	t.Run("ChecksumIgnoresSurroundingWhitespace", func(t *testing.T) {
		t.Parallel()
		a, err := db.ParseSteps("-- riverbank:step 1 a\nSELECT 1;\n")
		require.NoError(t, err)
		b, err := db.ParseSteps("-- riverbank:step 1 a\n\n  SELECT 1;\n\n")
		require.NoError(t, err)
		require.Equal(t, a[0].Checksum, b[0].Checksum)
	})
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("SecondRunIsNoop", func(t *testing.T) {
		t.Parallel()
		// The template is already migrated: a clone must need nothing.
		_, pool := testdb.NewDB(t)
		m, err := db.NewMigrator(pool)
		require.NoError(t, err)
		res, err := m.Migrate(ctx)
		require.NoError(t, err)
		require.Empty(t, res.RiverApplied)
		require.Empty(t, res.AppApplied)
		st, err := m.RequireCurrent(ctx)
		require.NoError(t, err)
		require.True(t, st.Current())
	})

	t.Run("EmptyDatabaseIsOutdatedThenMigrates", func(t *testing.T) {
		t.Parallel()
		_, pool := testdb.NewDB(t)
		// Turn the clone back into an empty database.
		_, err := pool.Exec(ctx, "DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
		require.NoError(t, err)
		m, err := db.NewMigrator(pool)
		require.NoError(t, err)
		_, err = m.RequireCurrent(ctx)
		require.ErrorContains(t, err, "riverbank migrate")

		res, err := m.Migrate(ctx)
		require.NoError(t, err)
		require.NotEmpty(t, res.RiverApplied)
		require.NotEmpty(t, res.AppApplied)
		_, err = m.RequireCurrent(ctx)
		require.NoError(t, err)
	})

	t.Run("ConcurrentRunsApplyOnce", func(t *testing.T) {
		t.Parallel()
		_, pool := testdb.NewDB(t)
		_, err := pool.Exec(ctx, "DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
		require.NoError(t, err)
		errs := make(chan error, 4)
		applied := make(chan int, 4)
		for range 4 {
			go func() {
				m, err := db.NewMigrator(pool)
				if err != nil {
					errs <- err
					return
				}
				res, err := m.Migrate(ctx)
				if err == nil {
					applied <- len(res.AppApplied)
				}
				errs <- err
			}()
		}
		total := 0
		for range 4 {
			require.NoError(t, <-errs)
		}
		close(applied)
		for n := range applied {
			total += n
		}
		steps, err := db.ParseSteps(riverbank.SchemaSQL)
		require.NoError(t, err)
		require.Equal(t, len(steps), total, "each step applied by exactly one runner")
	})

	t.Run("EditedAppliedStepIsRefused", func(t *testing.T) {
		t.Parallel()
		_, pool := testdb.NewDB(t)
		_, err := pool.Exec(ctx, "UPDATE riverbank_schema_step SET checksum = 'edited' WHERE version = 1")
		require.NoError(t, err)
		m, err := db.NewMigrator(pool)
		require.NoError(t, err)
		_, err = m.Migrate(ctx)
		require.Error(t, err)
		require.True(t, strings.Contains(err.Error(), "append-only"), err.Error())
	})
}
