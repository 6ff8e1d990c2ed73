package server

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSetsPoolMaxConns(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		dsn  string
		want bool
	}{
		{"URLWithout", "postgres://app@db:5432/riverbank?sslmode=disable", false},
		{"URLWith", "postgres://app@db:5432/riverbank?sslmode=disable&pool_max_conns=40", true},
		{"PostgresqlScheme", "postgresql://app@db/riverbank?pool_max_conns=8", true},
		{"OtherPoolSettingIsNotIt", "postgres://app@db/riverbank?pool_min_conns=2", false},
		{"KeywordValue", "host=db dbname=riverbank pool_max_conns=12", true},
		{"KeywordValueWithout", "host=db dbname=riverbank pool_max_conn_lifetime=1h", false},
		{"PasswordMentioningIt", "postgres://app:pool_max_conns@db/riverbank", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			require.Equal(t, tt.want, setsPoolMaxConns(tt.dsn))
		})
	}
}
