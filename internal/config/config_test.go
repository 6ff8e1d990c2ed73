package config_test

import (
	"bytes"
	"flag"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/internal/config"
)

// token is a valid API token (16+ characters).
const token = "tok-0123456789abcdef"

type testBundle struct {
	env map[string]string
	fs  *flag.FlagSet
}

func setup(t *testing.T, env map[string]string) *testBundle {
	t.Helper()
	fs := flag.NewFlagSet("riverbank test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if env == nil {
		env = map[string]string{}
	}
	return &testBundle{env: env, fs: fs}
}

// load registers names on a fresh flag set, parses args and loads.
func (b *testBundle) load(t *testing.T, names []string, args ...string) (*config.Config, error) {
	t.Helper()
	l := config.Register(b.fs, func(k string) string { return b.env[k] }, names)
	require.NoError(t, b.fs.Parse(args))
	return l.Load(b.fs)
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	c, err := b.load(t, config.All)
	require.NoError(t, err)

	require.Empty(t, c.DatabaseURL)
	require.Equal(t, ":8080", c.Addr)
	require.Empty(t, c.APITokens)
	require.False(t, c.AuthOff)
	require.Equal(t, time.UTC.String(), c.BusinessTZ.String())
	require.Equal(t, 15*time.Minute, c.OrderPaymentTimeout)
	require.Equal(t, 20, c.LateFeeDay)
	require.Equal(t, 10, c.CreditRestoreMaxAttempts)
	require.Equal(t, 20, c.Workers)
	require.Equal(t, "10 0 * * *", c.COBSchedule)
	require.NotNil(t, c.COBScheduleParsed)
	// 00:10 every day.
	from := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	require.Equal(t, time.Date(2025, 3, 2, 0, 10, 0, 0, time.UTC), c.COBScheduleParsed.Next(from))
	require.Equal(t, slog.LevelInfo, c.LogLevel)
	require.False(t, c.Migrate)
	require.Equal(t, 30*time.Second, c.ShutdownTimeout)
	require.Equal(t, time.Minute, c.SweepInterval)
	require.Equal(t, 10*time.Minute, c.PruneInterval)
	require.Equal(t, 30*time.Second, c.RequestTimeout)
	require.Equal(t, 30*time.Second, c.DatabaseWait)
}

func TestLoadFromEnv(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]string{
		"DATABASE_URL":                          "postgres://app@db.internal:5432/riverbank?sslmode=disable",
		"RIVERBANK_ADDR":                        "127.0.0.1:9090",
		"RIVERBANK_API_TOKENS":                  " " + token + " , ,other-token-0123456789 ",
		"RIVERBANK_AUTH":                        "on",
		"RIVERBANK_BUSINESS_TZ":                 "Europe/Berlin",
		"RIVERBANK_ORDER_PAYMENT_TIMEOUT":       "90s",
		"RIVERBANK_LATE_FEE_DAY":                "28",
		"RIVERBANK_CREDIT_RESTORE_MAX_ATTEMPTS": "3",
		"RIVERBANK_WORKERS":                     "7",
		"RIVERBANK_COB_SCHEDULE":                "30 1 * * 1-5",
		"RIVERBANK_LOG_LEVEL":                   "debug",
		"RIVERBANK_MIGRATE":                     "true",
		"RIVERBANK_SHUTDOWN_TIMEOUT":            "5s",
		"RIVERBANK_JOB_TIMEOUT":                 "45s",
		"RIVERBANK_SWEEP_INTERVAL":              "2s",
		"RIVERBANK_PRUNE_INTERVAL":              "90s",
		"RIVERBANK_REQUEST_TIMEOUT":             "12s",
		"RIVERBANK_DATABASE_WAIT":               "0s",
	})
	c, err := b.load(t, config.All)
	require.NoError(t, err)

	require.Equal(t, "postgres://app@db.internal:5432/riverbank?sslmode=disable", c.DatabaseURL)
	require.Equal(t, "127.0.0.1:9090", c.Addr)
	require.Equal(t, []string{token, "other-token-0123456789"}, c.APITokens, "tokens are trimmed and empty items skipped")
	require.Equal(t, "Europe/Berlin", c.BusinessTZ.String())
	require.Equal(t, 90*time.Second, c.OrderPaymentTimeout)
	require.Equal(t, 28, c.LateFeeDay)
	require.Equal(t, 3, c.CreditRestoreMaxAttempts)
	require.Equal(t, 45*time.Second, c.JobTimeout)
	require.Equal(t, 7, c.Workers)
	require.Equal(t, "30 1 * * 1-5", c.COBSchedule)
	// Saturday 2025-03-01 → next weekday run is Monday 01:30 in the
	// business time zone (Berlin, UTC+1 in March), i.e. 00:30 UTC.
	require.Equal(t, time.Date(2025, 3, 3, 0, 30, 0, 0, time.UTC), c.COBScheduleParsed.Next(time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)))
	require.Equal(t, slog.LevelDebug, c.LogLevel)
	require.True(t, c.Migrate)
	require.Equal(t, 5*time.Second, c.ShutdownTimeout)
	require.Equal(t, 2*time.Second, c.SweepInterval)
	require.Equal(t, 90*time.Second, c.PruneInterval)
	require.Equal(t, 12*time.Second, c.RequestTimeout)
	require.Zero(t, c.DatabaseWait)
}

func TestLoadSpecialValues(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		check func(t *testing.T, c *config.Config)
	}{
		{
			name: "AuthOff",
			env:  map[string]string{"RIVERBANK_AUTH": "off"},
			check: func(t *testing.T, c *config.Config) {
				require.True(t, c.AuthOff)
				require.NoError(t, c.RequireAuth())
			},
		},
		{
			// Descriptors such as @every (robfig/cron's standard parser)
			// give sub-minute schedules: the multi-instance test runs the
			// scheduler every few seconds.
			name: "COBScheduleAcceptsEveryDescriptor",
			env:  map[string]string{"RIVERBANK_COB_SCHEDULE": "@every 5s"},
			check: func(t *testing.T, c *config.Config) {
				require.NotNil(t, c.COBScheduleParsed)
				from := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
				require.Equal(t, from.Add(5*time.Second), c.COBScheduleParsed.Next(from))
			},
		},
		{
			name: "COBScheduleOffDisablesTheAutomaticClose",
			env:  map[string]string{"RIVERBANK_COB_SCHEDULE": "off"},
			check: func(t *testing.T, c *config.Config) {
				require.Equal(t, "off", c.COBSchedule)
				require.Nil(t, c.COBScheduleParsed)
			},
		},
		{
			name: "EmptyEnvMeansDefault",
			env:  map[string]string{"RIVERBANK_ADDR": "", "RIVERBANK_WORKERS": ""},
			check: func(t *testing.T, c *config.Config) {
				require.Equal(t, ":8080", c.Addr)
				require.Equal(t, 20, c.Workers)
			},
		},
		{
			name: "KeyValueConnectionString",
			env:  map[string]string{"DATABASE_URL": "host=/var/run/postgresql dbname=riverbank"},
			check: func(t *testing.T, c *config.Config) {
				require.Equal(t, "host=/var/run/postgresql dbname=riverbank", c.DatabaseURL)
			},
		},
		{
			name: "PostgresqlScheme",
			env:  map[string]string{"DATABASE_URL": "postgresql://localhost/riverbank"},
			check: func(t *testing.T, c *config.Config) {
				require.Equal(t, "postgresql://localhost/riverbank", c.DatabaseURL)
			},
		},
		{
			name: "MigrateFlagWithoutValue",
			args: []string{"--migrate"},
			check: func(t *testing.T, c *config.Config) {
				require.True(t, c.Migrate)
			},
		},
		{
			name: "MigrateFlagFalseOverridesEnv",
			env:  map[string]string{"RIVERBANK_MIGRATE": "1"},
			args: []string{"--migrate=false"},
			check: func(t *testing.T, c *config.Config) {
				require.False(t, c.Migrate)
			},
		},
		{
			name: "ZeroShutdownTimeoutCancelsJobsAtOnce",
			env:  map[string]string{"RIVERBANK_SHUTDOWN_TIMEOUT": "0s"},
			check: func(t *testing.T, c *config.Config) {
				require.Zero(t, c.ShutdownTimeout)
			},
		},
		{
			// Keys in any base64 alphabet, padded or not; the first one
			// encrypts, so rotating is putting a new key first.
			name: "WebhookKeysForRotation",
			env:  map[string]string{"RIVERBANK_WEBHOOK_KEY": " AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE= , ,_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v7-_v4"},
			check: func(t *testing.T, c *config.Config) {
				require.Len(t, c.WebhookKeys, 2)
				require.Equal(t, bytes.Repeat([]byte{1}, 32), c.WebhookKeys[0])
				require.Equal(t, bytes.Repeat([]byte{0xfe}, 32), c.WebhookKeys[1])
			},
		},
		{
			name: "NoWebhookKeyByDefault",
			check: func(t *testing.T, c *config.Config) {
				require.Empty(t, c.WebhookKeys)
			},
		},
		{
			name: "RangeBoundsAreInclusive",
			env: map[string]string{
				"RIVERBANK_LATE_FEE_DAY": "1", "RIVERBANK_CREDIT_RESTORE_MAX_ATTEMPTS": "1000",
				"RIVERBANK_WORKERS": "10000", "RIVERBANK_ORDER_PAYMENT_TIMEOUT": "720h",
			},
			check: func(t *testing.T, c *config.Config) {
				require.Equal(t, 1, c.LateFeeDay)
				require.Equal(t, 1000, c.CreditRestoreMaxAttempts)
				require.Equal(t, 10000, c.Workers)
				require.Equal(t, 720*time.Hour, c.OrderPaymentTimeout)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.env)
			c, err := b.load(t, config.All, tt.args...)
			require.NoError(t, err)
			tt.check(t, c)
		})
	}
}

func TestLoadFlagOverridesEnv(t *testing.T) {
	t.Parallel()

	t.Run("ValidFlagWinsOverValidEnv", func(t *testing.T) {
		t.Parallel()
		b := setup(t, map[string]string{"RIVERBANK_LATE_FEE_DAY": "5", "RIVERBANK_ADDR": ":7000", "RIVERBANK_API_TOKENS": token})
		c, err := b.load(t, config.All, "--late-fee-day", "6", "-addr=:7001", "--api-tokens", "flag-token-0123456789")
		require.NoError(t, err)
		require.Equal(t, 6, c.LateFeeDay)
		require.Equal(t, ":7001", c.Addr)
		require.Equal(t, []string{"flag-token-0123456789"}, c.APITokens)
	})

	t.Run("ValidFlagHidesInvalidEnv", func(t *testing.T) {
		t.Parallel()
		b := setup(t, map[string]string{"RIVERBANK_LATE_FEE_DAY": "40"})
		c, err := b.load(t, config.All, "--late-fee-day=12")
		require.NoError(t, err)
		require.Equal(t, 12, c.LateFeeDay)
	})

	t.Run("InvalidFlagIsNamedAsTheFlag", func(t *testing.T) {
		t.Parallel()
		b := setup(t, map[string]string{"RIVERBANK_LATE_FEE_DAY": "5"})
		_, err := b.load(t, config.All, "--late-fee-day=40")
		require.EqualError(t, err, `invalid --late-fee-day="40": must be a whole number from 1 to 28`)
	})
}

func TestLoadInvalid(t *testing.T) {
	t.Parallel()

	// Every setting with values that must be rejected. TestEveryInvalidSettingIsCovered
	// makes sure a new setting gets a row here.
	tests := []struct {
		env    string
		values []string
		// want is a fragment of the explanation that says what is allowed.
		want string
	}{
		{"DATABASE_URL", []string{"mysql://root:secret@db/x", "riverbank"}, "postgres:// URL"},
		{"RIVERBANK_ADDR", []string{"8080", "localhost", "a:b:c"}, "host:port"},
		{"RIVERBANK_API_TOKENS", []string{"short", token + ",tooshort", "a token with spaces inside", "tökén-0123456789abcdef", "tab\there-0123456789abcdef"}, "at least 16 characters"},
		{"RIVERBANK_AUTH", []string{"maybe", "OFF", "false"}, "on or off"},
		{"RIVERBANK_BUSINESS_TZ", []string{"Mars/Olympus_Mons", "+02:00"}, "IANA time zone"},
		{"RIVERBANK_ORDER_PAYMENT_TIMEOUT", []string{"abc", "15", "0s", "500ms", "721h", "-5m"}, "between 1s and 720h"},
		{"RIVERBANK_LATE_FEE_DAY", []string{"40", "0", "29", "-1", "x", "1.5"}, "from 1 to 28"},
		{"RIVERBANK_CREDIT_RESTORE_MAX_ATTEMPTS", []string{"0", "1001", "many"}, "from 1 to 1000"},
		{"RIVERBANK_WORKERS", []string{"0", "-3", "10001", "ten"}, "from 1 to 10000"},
		{"RIVERBANK_COB_SCHEDULE", []string{"nonsense", "* * *", "0 0 0 * * *", "60 0 * * *", "Off"}, "cron expression"},
		{"RIVERBANK_LOG_LEVEL", []string{"loud", "verbose"}, "debug, info, warn or error"},
		{"RIVERBANK_MIGRATE", []string{"yes", "on", "2"}, "1, true, 0 or false"},
		{"RIVERBANK_SHUTDOWN_TIMEOUT", []string{"soon", "-1s", "2h", "30"}, "between 0s and 1h"},
		{"RIVERBANK_JOB_TIMEOUT", []string{"soon", "0s", "500ms", "2h", "30"}, "between 1s and 1h"},
		{"RIVERBANK_REQUEST_TIMEOUT", []string{"soon", "0s", "500ms", "11m", "30"}, "between 1s and 10m"},
		{"RIVERBANK_DATABASE_WAIT", []string{"soon", "-1s", "2h", "30"}, "between 0s and 1h"},
		{"RIVERBANK_CREDIT_RESTORE_BACKOFF", []string{"soon", "1ms", "2h", "5"}, "between 10ms and 1h"},
		{"RIVERBANK_COB_CHUNK_SIZE", []string{"0", "-1", "1000001", "big"}, "from 1 to 1000000"},
		{"RIVERBANK_EVENT_RETENTION", []string{"forever", "30s", "100000h", "30"}, "between 1m and 87600h"},
		{"RIVERBANK_SWEEP_INTERVAL", []string{"often", "500ms", "2h", "60"}, "between 1s and 1h"},
		{"RIVERBANK_PRUNE_INTERVAL", []string{"daily", "0s", "25h", "600"}, "between 1s and 24h"},
		{"RIVERBANK_WEBHOOK_MAX_ATTEMPTS", []string{"0", "1001", "lots"}, "from 1 to 1000"},
		{"RIVERBANK_WEBHOOK_ALLOW_PRIVATE", []string{"yes", "2"}, "must be 1, true, 0 or false"},
		{"RIVERBANK_WEBHOOK_KEY", []string{"short", "not base64 at all!", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=,tooshort"}, "base64 of 32 bytes"},
	}
	for _, tt := range tests {
		for _, v := range tt.values {
			t.Run(tt.env+"="+v, func(t *testing.T) {
				t.Parallel()
				b := setup(t, map[string]string{tt.env: v})
				c, err := b.load(t, config.All)
				require.Error(t, err)
				require.Nil(t, c)
				msg := err.Error()
				require.True(t, strings.HasPrefix(msg, "invalid "+tt.env+"="), "error must start by naming the variable: %q", msg)
				require.Contains(t, msg, tt.want)
				require.NotContains(t, msg, "\n", "one line")
				require.Equal(t, 1, strings.Count(msg, "invalid "), "only the bad setting is reported: %q", msg)
				if tt.env == "DATABASE_URL" || tt.env == "RIVERBANK_API_TOKENS" || tt.env == "RIVERBANK_WEBHOOK_KEY" {
					require.NotContains(t, msg, v, "secrets are never echoed")
					require.NotContains(t, msg, "secret")
				} else {
					require.Contains(t, msg, `"`+v+`"`, "the bad value is shown")
				}
			})
		}
	}

	t.Run("AllErrorsAreReportedTogether", func(t *testing.T) {
		t.Parallel()
		b := setup(t, map[string]string{
			"RIVERBANK_LATE_FEE_DAY":          "40",
			"RIVERBANK_COB_SCHEDULE":          "nonsense",
			"RIVERBANK_ORDER_PAYMENT_TIMEOUT": "abc",
		})
		_, err := b.load(t, config.All, "--workers=0")
		require.EqualError(t, err, `invalid --workers="0": must be a whole number from 1 to 10000; `+
			`invalid RIVERBANK_COB_SCHEDULE="nonsense": must be a 5-field cron expression (e.g. "10 0 * * *") or off; `+
			`invalid RIVERBANK_LATE_FEE_DAY="40": must be a whole number from 1 to 28; `+
			`invalid RIVERBANK_ORDER_PAYMENT_TIMEOUT="abc": must be a duration between 1s and 720h (e.g. 15m)`)
	})

	t.Run("EveryInvalidSettingIsCovered", func(t *testing.T) {
		t.Parallel()
		covered := map[string]bool{}
		for _, tt := range tests {
			covered[tt.env] = true
		}
		envRe := regexp.MustCompile(`\(env ([A-Z_]+),`)
		b := setup(t, nil)
		config.Register(b.fs, func(string) string { return "" }, config.All)
		b.fs.VisitAll(func(f *flag.Flag) {
			m := envRe.FindStringSubmatch(f.Usage)
			require.NotNil(t, m, "usage of --%s names its environment variable", f.Name)
			require.True(t, covered[m[1]], "add invalid values for %s to TestLoadInvalid", m[1])
		})
	})
}

func TestLoadUnregisteredSettingsKeepDefaults(t *testing.T) {
	t.Parallel()
	// `migrate` registers only what it needs: a broken setting it does not
	// use must not stop it.
	b := setup(t, map[string]string{
		"DATABASE_URL":           "postgres://localhost/riverbank",
		"RIVERBANK_LATE_FEE_DAY": "40",
		"RIVERBANK_WORKERS":      "0",
	})
	c, err := b.load(t, config.DatabaseOnly)
	require.NoError(t, err)
	require.Equal(t, "postgres://localhost/riverbank", c.DatabaseURL)
	require.Equal(t, 20, c.LateFeeDay)
	require.Equal(t, 20, c.Workers)
	require.Nil(t, b.fs.Lookup("late-fee-day"), "migrate has no --late-fee-day")
	require.NotNil(t, b.fs.Lookup("database-url"))
}

func TestLoadForMigrate(t *testing.T) {
	t.Parallel()
	b := setup(t, map[string]string{"RIVERBANK_DATABASE_WAIT": "5s", "RIVERBANK_WORKERS": "0"})
	c, err := b.load(t, config.ForMigrate)
	require.NoError(t, err)
	require.Equal(t, 5*time.Second, c.DatabaseWait, "migrate waits for its database like serve")
	require.NotNil(t, b.fs.Lookup("database-wait"))
	require.Nil(t, b.fs.Lookup("workers"))
}

func TestUsageNamesEnvironmentVariables(t *testing.T) {
	t.Parallel()
	b := setup(t, nil)
	config.Register(b.fs, func(string) string { return "" }, config.All)
	var out bytes.Buffer
	b.fs.SetOutput(&out)
	b.fs.PrintDefaults()
	for _, env := range []string{
		"DATABASE_URL", "RIVERBANK_ADDR", "RIVERBANK_API_TOKENS", "RIVERBANK_AUTH", "RIVERBANK_BUSINESS_TZ",
		"RIVERBANK_ORDER_PAYMENT_TIMEOUT", "RIVERBANK_LATE_FEE_DAY", "RIVERBANK_CREDIT_RESTORE_MAX_ATTEMPTS",
		"RIVERBANK_WORKERS", "RIVERBANK_COB_SCHEDULE", "RIVERBANK_LOG_LEVEL", "RIVERBANK_MIGRATE", "RIVERBANK_SHUTDOWN_TIMEOUT",
		"RIVERBANK_JOB_TIMEOUT", "RIVERBANK_CREDIT_RESTORE_BACKOFF", "RIVERBANK_COB_CHUNK_SIZE", "RIVERBANK_EVENT_RETENTION",
		"RIVERBANK_WEBHOOK_MAX_ATTEMPTS", "RIVERBANK_WEBHOOK_ALLOW_PRIVATE", "RIVERBANK_WEBHOOK_KEY",
		"RIVERBANK_SWEEP_INTERVAL", "RIVERBANK_PRUNE_INTERVAL",
		"RIVERBANK_REQUEST_TIMEOUT", "RIVERBANK_DATABASE_WAIT",
	} {
		require.Contains(t, out.String(), "(env "+env+",", "--help shows %s", env)
	}
}

func TestRequireAuth(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		env     map[string]string
		wantErr bool
	}{
		{"NoTokensIsRefused", nil, true},
		{"BlankTokenListIsRefused", map[string]string{"RIVERBANK_API_TOKENS": " , "}, true},
		{"TokensAreEnough", map[string]string{"RIVERBANK_API_TOKENS": token}, false},
		{"AuthOffMustBeExplicit", map[string]string{"RIVERBANK_AUTH": "off"}, false},
		{"AuthOnWithoutTokensIsRefused", map[string]string{"RIVERBANK_AUTH": "on"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tt.env)
			c, err := b.load(t, config.All)
			require.NoError(t, err)
			err = c.RequireAuth()
			if !tt.wantErr {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			require.Contains(t, err.Error(), "RIVERBANK_API_TOKENS")
			require.Contains(t, err.Error(), "RIVERBANK_AUTH=off")
		})
	}
}

func TestRequireDatabase(t *testing.T) {
	t.Parallel()

	t.Run("MissingNamesTheVariableAndTheWayOut", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		c, err := b.load(t, config.DatabaseOnly)
		require.NoError(t, err)
		err = c.RequireDatabase()
		require.Error(t, err)
		require.Contains(t, err.Error(), "DATABASE_URL")
		require.Contains(t, err.Error(), "--database-url")
		require.Contains(t, err.Error(), "riverbank dev")
	})

	t.Run("FlagIsEnough", func(t *testing.T) {
		t.Parallel()
		b := setup(t, nil)
		c, err := b.load(t, config.DatabaseOnly, "--database-url", "postgres://localhost/x")
		require.NoError(t, err)
		require.NoError(t, c.RequireDatabase())
	})
}
