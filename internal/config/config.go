// Package config reads riverbank's settings from the environment
// (RIVERBANK_*, DATABASE_URL) with command-line flags overriding, and
// validates all of them up front so a bad value fails at start with one line
// that names the variable or flag and says what is allowed.
package config

import (
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Config is the validated configuration of one riverbank process.
type Config struct {
	// DatabaseURL is the Postgres connection string (DATABASE_URL).
	DatabaseURL string
	// Addr is the HTTP listen address (RIVERBANK_ADDR).
	Addr string
	// APITokens are the accepted bearer tokens (RIVERBANK_API_TOKENS).
	APITokens []string
	// AuthOff disables authentication; only when RIVERBANK_AUTH=off.
	AuthOff bool
	// BusinessTZ is the zone business dates are taken in.
	BusinessTZ *time.Location
	// OrderPaymentTimeout is how long an order may stay unpaid.
	OrderPaymentTimeout time.Duration
	// LateFeeDay is the day of month a late fee may be charged (1..28).
	LateFeeDay int
	// CreditRestoreMaxAttempts bounds credit.restore retries before River
	// discards the job (the dead letter).
	CreditRestoreMaxAttempts int
	// Workers is River's MaxWorkers for the default queue; other queues are
	// sized from it (see jobs.Queues).
	Workers int
	// CreditRestoreBackoff is the first retry delay of a failed
	// credit.restore job.
	CreditRestoreBackoff time.Duration
	// EventRetention is how long events stay in the feed.
	EventRetention time.Duration
	// WebhookMaxAttempts bounds delivery attempts of one webhook event.
	WebhookMaxAttempts int
	// WebhookAllowPrivate allows webhook targets on private addresses.
	WebhookAllowPrivate bool
	// WebhookKeys are the AES-256 keys that encrypt webhook signing secrets
	// at rest (RIVERBANK_WEBHOOK_KEY): the first encrypts new secrets, every
	// one decrypts, so a key is rotated by putting the new one first. Empty:
	// webhook subscriptions cannot be created.
	WebhookKeys [][]byte
	// SweepInterval is the period of the leader's sweeps: ledger.sweep
	// (applies non-urgent journal entries), orders.sweep and case.sweep
	// (re-enqueue confirmations and merges that went missing).
	SweepInterval time.Duration
	// PruneInterval is the period of the leader's retention jobs
	// (events.prune, webhook.prune).
	PruneInterval time.Duration
	// COBChunkSize is how many loan ids one close-of-business chunk job
	// covers.
	COBChunkSize int
	// COBSchedule is the cron expression of the automatic close of business,
	// or "off".
	COBSchedule string
	// COBScheduleParsed is COBSchedule parsed (nil when off).
	COBScheduleParsed cron.Schedule
	// LogLevel is the minimum slog level.
	LogLevel slog.Level
	// Migrate makes `serve` apply migrations before starting.
	Migrate bool
	// JobTimeout bounds one job attempt; River rescues a job still
	// `running` after twice this (a process killed mid-job), so it is also
	// how fast work resumes after a crash.
	JobTimeout time.Duration
	// ShutdownTimeout bounds graceful shutdown (HTTP drain + River soft stop)
	// before running jobs are cancelled.
	ShutdownTimeout time.Duration
	// RequestTimeout bounds the work of one HTTP request (its context's
	// deadline; a long-poll of the events feed gets its wait on top): a
	// database that does not answer in time makes it 503
	// database_unavailable instead of a hang.
	RequestTimeout time.Duration
	// DatabaseWait is how long serve and migrate wait at start for a
	// database that cannot be reached before giving up (0: fail at once).
	DatabaseWait time.Duration
}

// setting is one configurable value: its environment variable, its flag,
// its default and how to parse it into a Config.
type setting struct {
	env, flag, def, usage string
	parse                 func(c *Config, v string) error
}

var settings = []setting{
	{"DATABASE_URL", "database-url", "", "Postgres connection string (postgres://user@host:5432/db)", func(c *Config, v string) error {
		if v != "" && !strings.HasPrefix(v, "postgres://") && !strings.HasPrefix(v, "postgresql://") && !strings.Contains(v, "=") {
			return errors.New("must be a postgres:// URL or a key=value connection string")
		}
		c.DatabaseURL = v
		return nil
	}},
	{"RIVERBANK_ADDR", "addr", ":8080", "HTTP listen address", func(c *Config, v string) error {
		if _, _, err := net.SplitHostPort(v); err != nil {
			return errors.New("must be host:port or :port")
		}
		c.Addr = v
		return nil
	}},
	{"RIVERBANK_API_TOKENS", "api-tokens", "", "comma-separated bearer tokens accepted by the API", func(c *Config, v string) error {
		c.APITokens = nil
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				// Printable ASCII without spaces: what a client can send
				// in an Authorization field unchanged (the API compares
				// tokens byte for byte, see api/auth.go).
				if len(t) < 16 || strings.IndexFunc(t, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0 {
					return errors.New("every token must be at least 16 characters of printable ASCII without spaces")
				}
				c.APITokens = append(c.APITokens, t)
			}
		}
		return nil
	}},
	{"RIVERBANK_AUTH", "auth", "on", "on, or off to disable authentication explicitly (development only)", func(c *Config, v string) error {
		switch v {
		case "on":
			c.AuthOff = false
		case "off":
			c.AuthOff = true
		default:
			return errors.New("must be on or off")
		}
		return nil
	}},
	{"RIVERBANK_BUSINESS_TZ", "business-tz", "UTC", "IANA time zone of business dates", func(c *Config, v string) error {
		loc, err := time.LoadLocation(v)
		if err != nil {
			return errors.New("must be an IANA time zone such as UTC or Europe/Berlin")
		}
		c.BusinessTZ = loc
		return nil
	}},
	{"RIVERBANK_ORDER_PAYMENT_TIMEOUT", "order-payment-timeout", "15m", "how long an order may stay unpaid before it is cancelled", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second || d > 30*24*time.Hour {
			return errors.New("must be a duration between 1s and 720h (e.g. 15m)")
		}
		c.OrderPaymentTimeout = d
		return nil
	}},
	{"RIVERBANK_LATE_FEE_DAY", "late-fee-day", "20", "day of month (1..28) on which late fees are charged", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 28 {
			return errors.New("must be a whole number from 1 to 28")
		}
		c.LateFeeDay = n
		return nil
	}},
	{"RIVERBANK_CREDIT_RESTORE_MAX_ATTEMPTS", "credit-restore-max-attempts", "10", "attempts before a credit.restore job is discarded (dead letter)", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return errors.New("must be a whole number from 1 to 1000")
		}
		c.CreditRestoreMaxAttempts = n
		return nil
	}},
	{"RIVERBANK_CREDIT_RESTORE_BACKOFF", "credit-restore-backoff", "1m", "first retry delay of a failed credit.restore (doubles per attempt, capped at 1h)", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 10*time.Millisecond || d > time.Hour {
			return errors.New("must be a duration between 10ms and 1h (e.g. 1m)")
		}
		c.CreditRestoreBackoff = d
		return nil
	}},
	{"RIVERBANK_WORKERS", "workers", "20", "River MaxWorkers of the default queue (other queues are sized from it)", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return errors.New("must be a whole number from 1 to 10000")
		}
		c.Workers = n
		return nil
	}},
	{"RIVERBANK_COB_SCHEDULE", "cob-schedule", "10 0 * * *", "cron schedule of the automatic close of business in the business time zone, or off", func(c *Config, v string) error {
		c.COBSchedule = v
		c.COBScheduleParsed = nil
		if v == "off" {
			return nil
		}
		if strings.Contains(v, "TZ=") {
			return errors.New("must not name a time zone: the schedule runs in RIVERBANK_BUSINESS_TZ")
		}
		if _, err := cron.ParseStandard(v); err != nil {
			return errors.New("must be a 5-field cron expression (e.g. \"10 0 * * *\") or off")
		}
		// Parsed again with the business time zone once every setting is
		// read (Load), whatever order they come in.
		return nil
	}},
	{"RIVERBANK_COB_CHUNK_SIZE", "cob-chunk-size", "5000", "loan ids per close-of-business chunk job", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000000 {
			return errors.New("must be a whole number from 1 to 1000000")
		}
		c.COBChunkSize = n
		return nil
	}},
	{"RIVERBANK_SWEEP_INTERVAL", "sweep-interval", "1m", "how often the River leader sweeps: applies non-urgent journal entries, re-enqueues lost order confirmations and case merges", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second || d > time.Hour {
			return errors.New("must be a duration between 1s and 1h (e.g. 1m)")
		}
		c.SweepInterval = d
		return nil
	}},
	{"RIVERBANK_PRUNE_INTERVAL", "prune-interval", "10m", "how often the River leader drops events and webhook deliveries older than the event retention", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second || d > 24*time.Hour {
			return errors.New("must be a duration between 1s and 24h (e.g. 10m)")
		}
		c.PruneInterval = d
		return nil
	}},
	{"RIVERBANK_EVENT_RETENTION", "event-retention", "720h", "how long events stay in the feed (older ones are dropped; an older cursor is 410)", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Minute || d > 10*365*24*time.Hour {
			return errors.New("must be a duration between 1m and 87600h (e.g. 720h for 30 days)")
		}
		c.EventRetention = d
		return nil
	}},
	{"RIVERBANK_WEBHOOK_MAX_ATTEMPTS", "webhook-max-attempts", "12", "delivery attempts before a webhook delivery is discarded (dead letter)", func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return errors.New("must be a whole number from 1 to 1000")
		}
		c.WebhookMaxAttempts = n
		return nil
	}},
	{"RIVERBANK_WEBHOOK_ALLOW_PRIVATE", "webhook-allow-private", "0", "allow webhook targets on loopback, private and link-local addresses: 1/true or 0/false", func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("must be 1, true, 0 or false")
		}
		c.WebhookAllowPrivate = b
		return nil
	}},
	{"RIVERBANK_WEBHOOK_KEY", "webhook-key", "", "base64 of 32 random bytes that encrypts webhook signing secrets at rest (openssl rand -base64 32); several comma-separated to rotate, the first encrypts", func(c *Config, v string) error {
		c.WebhookKeys = nil
		for _, k := range strings.Split(v, ",") {
			if k = strings.TrimSpace(k); k == "" {
				continue
			}
			key, err := decodeKey(k)
			if err != nil {
				return err
			}
			c.WebhookKeys = append(c.WebhookKeys, key)
		}
		return nil
	}},
	{"RIVERBANK_LOG_LEVEL", "log-level", "info", "debug, info, warn or error", func(c *Config, v string) error {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			return errors.New("must be debug, info, warn or error")
		}
		return nil
	}},
	{"RIVERBANK_MIGRATE", "migrate", "0", "apply migrations at start (serve only): 1/true or 0/false", func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("must be 1, true, 0 or false")
		}
		c.Migrate = b
		return nil
	}},
	{"RIVERBANK_JOB_TIMEOUT", "job-timeout", "1m", "longest a job attempt may run; jobs left running by a killed process are rescued after twice this", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second || d > time.Hour {
			return errors.New("must be a duration between 1s and 1h")
		}
		c.JobTimeout = d
		return nil
	}},
	{"RIVERBANK_SHUTDOWN_TIMEOUT", "shutdown-timeout", "30s", "graceful shutdown budget before running jobs are cancelled", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > time.Hour {
			return errors.New("must be a duration between 0s and 1h")
		}
		c.ShutdownTimeout = d
		return nil
	}},
	{"RIVERBANK_REQUEST_TIMEOUT", "request-timeout", "30s", "longest an HTTP request may work (a long-poll of /v1/events gets its wait on top); past it the answer is 503 database_unavailable", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < time.Second || d > 10*time.Minute {
			return errors.New("must be a duration between 1s and 10m")
		}
		c.RequestTimeout = d
		return nil
	}},
	{"RIVERBANK_DATABASE_WAIT", "database-wait", "30s", "how long to wait at start for a database that cannot be reached before exiting with an error (0s: do not wait)", func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > time.Hour {
			return errors.New("must be a duration between 0s and 1h")
		}
		c.DatabaseWait = d
		return nil
	}},
}

// boolFlags are settings whose flag may be given without a value
// (`--migrate` means `--migrate=true`).
var boolFlags = map[string]bool{"migrate": true}

// secretEnv are settings whose value must never be echoed in an error: a
// token list or a connection string with a password would end up in logs.
var secretEnv = map[string]bool{"DATABASE_URL": true, "RIVERBANK_API_TOKENS": true, "RIVERBANK_WEBHOOK_KEY": true}

// decodeKey reads one 32-byte key in any base64 alphabet, padded or not.
func decodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			if len(b) != 32 {
				return nil, fmt.Errorf("every key must be base64 of 32 bytes, not %d (openssl rand -base64 32)", len(b))
			}
			return b, nil
		}
	}
	return nil, errors.New("every key must be base64 of 32 bytes (openssl rand -base64 32)")
}

// Names of settings, for Register.
var (
	// All is every setting.
	All = func() []string {
		out := make([]string, len(settings))
		for i, s := range settings {
			out[i] = s.flag
		}
		return out
	}()
	// DatabaseOnly is what `migrate` needs.
	DatabaseOnly = []string{"database-url", "log-level"}
	// ForMigrate is what `migrate` reads: the database, and how long to wait
	// for it at start.
	ForMigrate = []string{"database-url", "log-level", "database-wait"}
)

// Loader binds settings to a flag set and, after parsing, resolves each one
// from its flag, else its environment variable, else its default.
type Loader struct {
	getenv func(string) string
	used   []setting
	flags  map[string]*string
}

// Register adds the named settings (flag names) to fs.
func Register(fs *flag.FlagSet, getenv func(string) string, names []string) *Loader {
	l := &Loader{getenv: getenv, flags: map[string]*string{}}
	for _, name := range names {
		for _, s := range settings {
			if s.flag != name {
				continue
			}
			l.used = append(l.used, s)
			v := new(string)
			l.flags[s.flag] = v
			usage := fmt.Sprintf("%s (env %s, default %q)", s.usage, s.env, s.def)
			set := func(val string) error {
				*v = val
				return nil
			}
			if boolFlags[s.flag] {
				fs.BoolFunc(s.flag, usage, set)
			} else {
				fs.Func(s.flag, usage, set)
			}
		}
	}
	return l
}

// Load resolves and validates every registered setting. Settings that were
// not registered keep their defaults.
func (l *Loader) Load(fs *flag.FlagSet) (*Config, error) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	c := &Config{}
	// Defaults for every setting first, so unregistered ones are valid too.
	for _, s := range settings {
		if err := s.parse(c, s.def); err != nil {
			return nil, fmt.Errorf("default of %s: %w", s.env, err)
		}
	}
	var errs []string
	for _, s := range l.used {
		v, src := s.def, ""
		if ev := l.getenv(s.env); ev != "" {
			v, src = ev, s.env
		}
		if set[s.flag] {
			v, src = *l.flags[s.flag], "--"+s.flag
		}
		if err := s.parse(c, v); err != nil {
			if src == "" {
				src = s.env
			}
			shown := fmt.Sprintf("%q", v)
			if secretEnv[s.env] {
				shown = "(value hidden)"
			}
			errs = append(errs, fmt.Sprintf("invalid %s=%s: %v", src, shown, err))
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, errors.New(strings.Join(errs, "; "))
	}
	if err := c.parseCOBSchedule(); err != nil {
		return nil, err
	}
	return c, nil
}

// parseCOBSchedule evaluates the COB cron in the business time zone: "10 0
// * * *" means ten past midnight where the business's dates change, not on
// the server's clock.
func (c *Config) parseCOBSchedule() error {
	c.COBScheduleParsed = nil
	if c.COBSchedule == "off" || c.COBSchedule == "" {
		return nil
	}
	tz := "UTC"
	if c.BusinessTZ != nil {
		tz = c.BusinessTZ.String()
	}
	s, err := cron.ParseStandard("CRON_TZ=" + tz + " " + c.COBSchedule)
	if err != nil {
		return fmt.Errorf("invalid RIVERBANK_COB_SCHEDULE=%q: must be a 5-field cron expression (e.g. \"10 0 * * *\") or off", c.COBSchedule)
	}
	c.COBScheduleParsed = s
	return nil
}

// RequireAuth checks the rule that a server never starts open by accident.
func (c *Config) RequireAuth() error {
	if !c.AuthOff && len(c.APITokens) == 0 {
		return errors.New("no API tokens: set RIVERBANK_API_TOKENS (comma-separated, 16+ characters each), or RIVERBANK_AUTH=off to run without authentication")
	}
	return nil
}

// RequireDatabase checks that a database URL was given.
func (c *Config) RequireDatabase() error {
	if c.DatabaseURL == "" {
		return errors.New("no database: set DATABASE_URL (or --database-url), e.g. postgres://postgres@127.0.0.1:5432/riverbank?sslmode=disable; `riverbank dev` starts a private one for you")
	}
	return nil
}
