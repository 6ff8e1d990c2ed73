// Package lending is riverbank's credit business (SPEC §6): credit lines,
// loans, repayments and the restoration of credit that a repayment's
// principal frees. A loan takes credit, is written and disburses through
// the ledger in one transaction; a repayment locks its loan, allocates the
// amount in the payer's order (rules.SeedOrder), updates the loan, posts
// the ledger entry and inserts the credit.restore job in one transaction —
// the transactional outbox that replaces seed 002's MQ, Redis pre-send
// hashes, log tables and hand-made dead-letter queue. The pure arithmetic
// lives in internal/lending/rules.
package lending

import (
	"log/slog"
	"regexp"
	"time"

	"github.com/riverqueue/river"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/lending/rules"
	"riverbank/internal/queue"
)

// Limits of one loan. Amounts stay within the ledger's per-posting limit;
// rates are capped at 100,000 bps (1,000% a year), far above any lawful
// rate, so a typo in basis points is caught.
const (
	MaxAmountMinor = 1_000_000_000_000_000
	MaxRateBps     = 100_000
	MaxIdentLen    = 128
)

// KindCreditRestore is the kind of the credit.restore job.
const KindCreditRestore = "credit.restore"

var (
	idRE       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,63}$`)
	loanNoRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,63}$`)
	currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)
)

// Options configure the service.
type Options struct {
	// Logger receives the service's warnings.
	Logger *slog.Logger
	// BusinessTZ is the zone business dates are taken in (UTC when nil):
	// "today" for a repayment's default value date.
	BusinessTZ *time.Location
	// RestoreMaxAttempts is how often River runs a credit.restore job
	// before discarding it into the dead letters (default 10).
	RestoreMaxAttempts int
	// RestoreBackoff is the first retry delay of a failed credit.restore
	// (doubling per attempt, capped at an hour; default 1 minute).
	RestoreBackoff time.Duration
	// Now is the clock (time.Now when nil); tests move it.
	Now func() time.Time
	// Strategy is the repayment order (rules.SeedOrder when zero).
	Strategy rules.Strategy
}

// Service writes and reads credit lines, loans and repayments.
type Service struct {
	store    *db.Store
	logger   *slog.Logger
	tz       *time.Location
	attempts int
	backoff  time.Duration
	now      func() time.Time
	strategy rules.Strategy
}

// NewService returns a lending service on store.
func NewService(store *db.Store, opts Options) *Service {
	s := &Service{store: store, logger: opts.Logger, tz: opts.BusinessTZ, attempts: opts.RestoreMaxAttempts, backoff: opts.RestoreBackoff, now: opts.Now, strategy: opts.Strategy}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	if s.tz == nil {
		s.tz = time.UTC
	}
	if s.attempts <= 0 {
		s.attempts = 10
	}
	if s.backoff <= 0 {
		s.backoff = time.Minute
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.strategy.Name == "" {
		s.strategy = rules.SeedOrder
	}
	return s
}

// Today is the current business date (midnight UTC of the date in the
// business time zone).
func (s *Service) Today() time.Time {
	y, m, d := s.now().In(s.tz).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// RestoreArgs are the args of credit.restore: give a repayment's principal
// back to its borrower's credit line. Inserted in the repayment's
// transaction (the outbox); idempotent per repayment through the
// credit_restoration row written with the update.
type RestoreArgs struct {
	RepaymentID int64 `json:"repayment_id"`
}

// Kind implements river.JobArgs.
func (RestoreArgs) Kind() string { return KindCreditRestore }

// InsertOpts implements river.JobArgsWithInsertOpts. MaxAttempts is set at
// insert time from RIVERBANK_CREDIT_RESTORE_MAX_ATTEMPTS.
func (RestoreArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: queue.Default}
}

func invalid(format string, args ...any) *riverbank.Error {
	return riverbank.Errorf(riverbank.EINVALID, format, args...)
}

// DateLayout is the wire format of business dates.
const DateLayout = "2006-01-02"

// ParseDate parses a YYYY-MM-DD business date (field names it in the
// error).
func ParseDate(field, v string) (time.Time, error) {
	t, err := time.Parse(DateLayout, v)
	if err != nil || t.Year() < 1900 || t.Year() > 9999 {
		return time.Time{}, invalid("%s %q is not a date (YYYY-MM-DD)", field, v).WithDetail("field", field)
	}
	return t, nil
}
