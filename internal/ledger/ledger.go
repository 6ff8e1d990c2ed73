// Package ledger is riverbank's double-entry ledger. Entries are validated
// and written PENDING inside the caller's transaction (the API's, or an
// order payment's, a disbursement's, an accrual's); ledger.apply River jobs
// then add pending postings to balances in per-account batches, so a hot
// account absorbs thousands of postings a second in a few large updates
// instead of thousands of contended row updates.
//
// Sign convention: a posting amount is positive for a debit and negative
// for a credit; a balance is the sum of its applied postings.
package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/events"
	"riverbank/internal/queue"
)

// System account codes that exist after `riverbank migrate`.
const (
	AccountPlatformCash              = "platform:cash"
	AccountLoansPrincipal            = "loans:principal"
	AccountLoansInterestDealer       = "loans:interest:dealer"
	AccountLoansInterestManufacturer = "loans:interest:manufacturer"
	AccountLoansPenalty              = "loans:penalty"
	AccountLoansLateFee              = "loans:late_fee"
	AccountIncomeInterest            = "income:interest"
	AccountIncomePenalty             = "income:penalty"
	AccountIncomeLateFee             = "income:late_fee"
)

// Limits of one entry.
const (
	MaxPostings       = 100
	MaxDescriptionLen = 500
	MaxKeyLen         = 200
	// MaxAmountMinor bounds one posting (10^15 minor units).
	MaxAmountMinor = 1_000_000_000_000_000
)

// MaxBalanceMinor bounds every account's balance (10^18 minor units, about
// a ninth of int64). An entry that would take a balance past ±MaxBalanceMinor
// is refused at write time with balance_out_of_range, so ledger.apply can
// never overflow. The check (InsertEntryWithPostings) adds the account's
// balance and the entry's net amount on it; for a net amount above
// LargeAmountMinor it also adds the account's pending postings, exactly.
// Small entries skip that scan (it would cost a hot account's writers a
// scan of its backlog): a balance can then pass MaxBalanceMinor only
// through small postings pending at the same time, and reaching int64
// would take over 8 million of them on one account.
const (
	MaxBalanceMinor  = 1_000_000_000_000_000_000
	LargeAmountMinor = 1_000_000_000_000
)

// SystemKeyPrefix starts the idempotency key of every entry an internal
// writer posts (order payments, later disbursements and accruals). The API
// refuses it, so a client can neither block nor forge an internal entry by
// taking its key first.
const SystemKeyPrefix = "sys:"

// MerchantPayable is the code of a merchant's payable account, created on
// first use by internal writers.
func MerchantPayable(merchantID string) string {
	return "merchant:" + merchantID + ":payable"
}

// systemAccounts are the accounts riverbank keeps once per currency, with
// the name and type an internal writer creates them with on first use.
var systemAccounts = map[string]struct {
	name string
	typ  db.LedgerAccountType
}{
	AccountPlatformCash:              {"Platform cash", db.LedgerAccountTypeASSET},
	AccountLoansPrincipal:            {"Loan principal receivable", db.LedgerAccountTypeASSET},
	AccountLoansInterestDealer:       {"Interest receivable, dealer-borne", db.LedgerAccountTypeASSET},
	AccountLoansInterestManufacturer: {"Interest receivable, manufacturer-borne", db.LedgerAccountTypeASSET},
	AccountLoansPenalty:              {"Penalty interest receivable", db.LedgerAccountTypeASSET},
	AccountLoansLateFee:              {"Late fee receivable", db.LedgerAccountTypeASSET},
	AccountIncomeInterest:            {"Interest income", db.LedgerAccountTypeINCOME},
	AccountIncomePenalty:             {"Penalty interest income", db.LedgerAccountTypeINCOME},
	AccountIncomeLateFee:             {"Late fee income", db.LedgerAccountTypeINCOME},
}

// reservedPrefixes start the codes only internal writers create: the
// system accounts and merchant payables. Were the API allowed to create
// them, a client could take merchant:m:payable in another currency first
// and block every payment to that merchant.
var reservedPrefixes = []string{"platform:", "loans:", "income:", "merchant:"}

// IsReservedCode reports whether code belongs to riverbank's internal
// writers (system accounts and merchant payables).
func IsReservedCode(code string) bool {
	for _, p := range reservedPrefixes {
		if strings.HasPrefix(code, p) {
			return true
		}
	}
	return false
}

var (
	codeRE     = regexp.MustCompile(`^[a-z0-9][a-z0-9_.:-]{0,127}$`)
	currencyRE = regexp.MustCompile(`^[A-Z]{3}$`)
	merchantRE = regexp.MustCompile(`^merchant:[a-z0-9_.-]{1,64}:payable$`)
)

// AccountTypes are the allowed account types.
var AccountTypes = []string{"ASSET", "LIABILITY", "EQUITY", "INCOME", "EXPENSE"}

// PostingInput is one line of an entry.
type PostingInput struct {
	Account     string `json:"account"`
	AmountMinor int64  `json:"amount_minor"`
}

// EntryInput is a journal entry to write.
type EntryInput struct {
	IdempotencyKey string         `json:"idempotency_key"`
	Description    string         `json:"description"`
	Urgent         bool           `json:"urgent"`
	Postings       []PostingInput `json:"postings"`
	// Currency is the entry's currency. It may be left empty when every
	// account code exists in one currency only; internal writers always
	// set it.
	Currency string `json:"currency,omitempty"`
	// CreateSystemAccounts lets internal writers post to system accounts
	// and merchant:{id}:payable accounts that do not exist yet in the
	// entry's currency: they are created on first use (concurrent first
	// uses create one). The API never sets it.
	CreateSystemAccounts bool `json:"-"`
}

// Account is an account with its applied balance.
type Account struct {
	ID              int64
	Code            string
	Name            string
	Type            string
	Currency        string
	System          bool
	BalanceMinor    int64
	PendingMinor    int64
	PendingCount    int64
	AppliedPostings int64
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// Posting is one stored posting.
type Posting struct {
	ID          int64
	EntryID     int64
	Account     string
	Currency    string
	AmountMinor int64
	Description string
	CreatedAt   time.Time
	AppliedAt   *time.Time
}

// Entry is a stored journal entry.
type Entry struct {
	ID             int64
	IdempotencyKey string
	Description    string
	Currency       string
	Urgent         bool
	Status         string
	CreatedAt      time.Time
	AppliedAt      *time.Time
	Postings       []Posting
}

// ApplyArgs are the args of the ledger.apply job: apply pending postings of
// one account. Unique per account while available, scheduled, pending,
// retryable or running (River requires running in the set), so a burst of
// urgent entries queues one job per account.
type ApplyArgs struct {
	AccountID int64 `json:"account_id"`
}

// Kind implements river.JobArgs.
func (ApplyArgs) Kind() string { return "ledger.apply" }

// InsertOpts implements river.JobArgsWithInsertOpts.
func (ApplyArgs) InsertOpts() river.InsertOpts {
	return river.InsertOpts{
		Queue:       queue.Ledger,
		MaxAttempts: 25,
		UniqueOpts: river.UniqueOpts{
			ByArgs: true,
			ByState: []rivertype.JobState{
				rivertype.JobStateAvailable, rivertype.JobStatePending, rivertype.JobStateRetryable,
				rivertype.JobStateRunning, rivertype.JobStateScheduled,
			},
		},
	}
}

// Service writes and reads the ledger.
type Service struct {
	store    *db.Store
	accounts *accountCache
}

// NewService returns a ledger service on store.
func NewService(store *db.Store) *Service {
	return &Service{store: store, accounts: &accountCache{m: map[string]db.AccountsByCodesRow{}}}
}

// accountCache maps (code, currency) to the account's id. Accounts are
// immutable in both and never deleted (postings reference them), so a
// cached entry can never go stale; it saves the hot API path one round
// trip. It is used when an entry names its currency. Bounded: it starts
// over when full.
type accountCache struct {
	mu sync.RWMutex
	m  map[string]db.AccountsByCodesRow
}

const accountCacheMax = 100_000

func (c *accountCache) get(codes []string, currency string) (map[string]db.AccountsByCodesRow, bool) {
	if c == nil || currency == "" {
		return nil, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]db.AccountsByCodesRow, len(codes))
	for _, code := range codes {
		a, ok := c.m[code+"\x00"+currency]
		if !ok {
			return nil, false
		}
		out[code] = a
	}
	return out, true
}

func (c *accountCache) put(rows map[string]db.AccountsByCodesRow) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m)+len(rows) > accountCacheMax {
		c.m = map[string]db.AccountsByCodesRow{}
	}
	for _, v := range rows {
		c.m[v.Code+"\x00"+v.Currency] = v
	}
}

func invalid(format string, args ...any) error {
	return riverbank.Errorf(riverbank.EINVALID, format, args...)
}

// Validate checks an entry's shape without touching the database.
func (in *EntryInput) Validate() error {
	if in.IdempotencyKey == "" || utf8.RuneCountInString(in.IdempotencyKey) > MaxKeyLen {
		return invalid("idempotency_key is required (1..%d characters)", MaxKeyLen)
	}
	// U+FFFD is what a JSON decoder makes of invalid UTF-8: two different
	// malformed keys would otherwise collapse into one.
	if !riverbank.ValidText(in.IdempotencyKey) || !riverbank.ValidText(in.Description) || strings.ContainsRune(in.IdempotencyKey, utf8.RuneError) {
		return invalid("idempotency_key and description must be valid UTF-8 without NUL characters")
	}
	if utf8.RuneCountInString(in.Description) > MaxDescriptionLen {
		return invalid("description is longer than %d characters", MaxDescriptionLen)
	}
	if len(in.Postings) < 2 {
		return invalid("an entry needs at least two postings")
	}
	if len(in.Postings) > MaxPostings {
		return invalid("an entry has at most %d postings", MaxPostings)
	}
	var sum int64
	for i, p := range in.Postings {
		if !codeRE.MatchString(p.Account) {
			return invalid("postings[%d].account %q is not a valid account code", i, p.Account)
		}
		if p.AmountMinor == 0 {
			return invalid("postings[%d].amount_minor must not be zero", i)
		}
		// A batch sums up to ApplyBatchSize amounts in bigint: the cap keeps
		// every batch sum and balance far from overflow.
		if p.AmountMinor > MaxAmountMinor || p.AmountMinor < -MaxAmountMinor {
			return invalid("postings[%d].amount_minor is out of range (|amount| <= %d)", i, int64(MaxAmountMinor))
		}
		sum += p.AmountMinor
	}
	if sum != 0 {
		return invalid("postings must sum to zero (debits positive, credits negative); they sum to %d", sum)
	}
	if in.Currency != "" && !currencyRE.MatchString(in.Currency) {
		return invalid("currency %q is not an ISO 4217 code (three capital letters)", in.Currency)
	}
	return nil
}

// payloadHash identifies the request for idempotency: same key with the
// same hash is a replay; a different hash is a conflict.
func (in *EntryInput) payloadHash() string {
	b, _ := json.Marshal(struct {
		D string         `json:"d"`
		U bool           `json:"u"`
		P []PostingInput `json:"p"`
	}{in.Description, in.Urgent, in.Postings})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Post writes an entry in its own transaction (the API path).
func (s *Service) Post(ctx context.Context, in EntryInput) (*Entry, bool, error) {
	if strings.HasPrefix(in.IdempotencyKey, SystemKeyPrefix) {
		return nil, false, invalid("idempotency_key must not start with %q: that prefix is reserved for riverbank's own entries", SystemKeyPrefix)
	}
	var (
		entry   *Entry
		created bool
	)
	err := s.store.InTx(ctx, func(tx *db.Tx) error {
		var err error
		entry, created, err = postTx(ctx, tx, in, s.accounts)
		return err
	})
	return entry, created, err
}

// PostTx validates and writes an entry with status PENDING inside the
// caller's transaction; every writer (API, order payment, disbursement,
// repayment, accrual) goes through it. It returns the entry and whether it
// was created now (false: an identical earlier request with the same key).
// Urgent entries enqueue ledger.apply for each of their accounts in the same
// transaction; others are picked up by the sweep within a minute.
func PostTx(ctx context.Context, tx *db.Tx, in EntryInput) (*Entry, bool, error) {
	return postTx(ctx, tx, in, nil)
}

func postTx(ctx context.Context, tx *db.Tx, in EntryInput, cache *accountCache) (*Entry, bool, error) {
	if err := in.Validate(); err != nil {
		return nil, false, err
	}
	hash := in.payloadHash()

	codes := make([]string, 0, len(in.Postings))
	seen := map[string]bool{}
	for _, p := range in.Postings {
		if !seen[p.Account] {
			seen[p.Account] = true
			codes = append(codes, p.Account)
		}
	}
	sort.Strings(codes)
	currency, byCode, err := resolveAccounts(ctx, tx, in, codes, cache)
	if riverbank.ErrorCode(err) == riverbank.ECURRENCYREQUIRED {
		// A code may have gained a currency since this key's entry was
		// written without one (an order paid in USD creates platform:cash
		// in USD): a retry must still get its entry back.
		if e, found, rerr := replayTx(ctx, tx, in, hash); found || rerr != nil {
			return e, false, rerr
		}
	}
	if err != nil {
		return nil, false, err
	}

	accIDs := make([]int64, len(in.Postings))
	amounts := make([]int64, len(in.Postings))
	net := map[int64]int64{}
	for i, p := range in.Postings {
		accIDs[i] = byCode[p.Account].ID
		amounts[i] = p.AmountMinor
		net[accIDs[i]] += p.AmountMinor
	}
	// Large entries on one account are serialised (a transaction lock per
	// account), so the range check of each sees the pending postings of
	// every earlier one: two concurrent large entries cannot both pass on
	// a balance that has room for one. Small entries never wait for it.
	var large []int64
	for id, n := range net {
		if n > LargeAmountMinor || n < -LargeAmountMinor {
			large = append(large, id)
		}
	}
	if len(large) > 0 {
		slices.Sort(large)
		if err := tx.LockAccountsForLargeEntry(ctx, large); err != nil {
			return nil, false, fmt.Errorf("lock accounts: %w", err)
		}
	}
	row, err := tx.InsertEntryWithPostings(ctx, db.InsertEntryWithPostingsParams{
		IdempotencyKey: in.IdempotencyKey,
		Description:    in.Description,
		Currency:       currency,
		Urgent:         in.Urgent,
		PayloadHash:    hash,
		AccountIds:     accIDs,
		Amounts:        amounts,
		MaxBalance:     numericInt(MaxBalanceMinor),
		LargeMinor:     numericInt(LargeAmountMinor),
	})
	if err != nil {
		return nil, false, fmt.Errorf("insert entry: %w", err)
	}
	if len(row.OutOfRange) > 0 {
		// A retry of an entry already written is answered with it: the
		// check counts the original's own pending postings (and the
		// balance has moved since), so a retry could otherwise be refused
		// for an entry that was in fact written.
		if e, found, rerr := replayTx(ctx, tx, in, hash); found || rerr != nil {
			return e, false, rerr
		}
		var bad []string
		for _, id := range row.OutOfRange {
			for _, c := range codes {
				if byCode[c].ID == id {
					bad = append(bad, c)
				}
			}
		}
		return nil, false, riverbank.Errorf(riverbank.EBALANCEOUTOFRANGE, "the entry would take the balance of %s (%s) past ±%d minor units", strings.Join(bad, ", "), currency, int64(MaxBalanceMinor)).
			WithDetail("accounts", bad).WithDetail("max_balance_minor", int64(MaxBalanceMinor))
	}
	if row.ID == nil {
		// The key exists (ON CONFLICT DO NOTHING waited for a concurrent
		// writer to commit): a replay or a conflict.
		e, found, err := replayTx(ctx, tx, in, hash)
		if err == nil && !found {
			err = fmt.Errorf("load entry by key %q: not found after a key conflict", in.IdempotencyKey)
		}
		return e, false, err
	}
	e := &Entry{ID: *row.ID, IdempotencyKey: in.IdempotencyKey, Description: in.Description, Currency: currency, Urgent: in.Urgent, Status: string(db.LedgerEntryStatusPENDING), CreatedAt: *row.CreatedAt}
	for i, p := range in.Postings {
		e.Postings = append(e.Postings, Posting{ID: row.PostingIds[i], EntryID: e.ID, Account: p.Account, Currency: currency, AmountMinor: amounts[i], CreatedAt: e.CreatedAt})
	}
	if !in.Urgent {
		if err := events.AppendTx(ctx, tx, events.JournalEntryPosted, "journal_entry", events.ID(e.ID), e); err != nil {
			return nil, false, err
		}
		return e, true, nil
	}
	// An urgent entry requests its accounts' application and appends its
	// event in one statement (one round trip fewer per entry).
	ids := make([]int64, 0, len(codes))
	for _, c := range codes {
		ids = append(ids, byCode[c].ID)
	}
	p := db.RequestApplyAndAppendEventParams{Ids: ids, SubjectID: events.ID(e.ID)}
	if events.On() {
		data, err := events.Data(e)
		if err != nil {
			return nil, false, err
		}
		p.EventType, p.Data = events.JournalEntryPosted, data
	} else {
		p.Data = []byte("null")
	}
	created, err := tx.RequestApplyAndAppendEvent(ctx, p)
	if err != nil {
		return nil, false, fmt.Errorf("request apply: %w", err)
	}
	if err := insertApplyJobsTx(ctx, tx, created); err != nil {
		return nil, false, err
	}
	if p.EventType != "" {
		events.Appended(tx)
	}
	return e, true, nil
}

// replayTx answers a request whose idempotency key is taken: the original
// entry when the payload is the same (and the currency, when the request
// names one; a client may omit it), else idempotency_conflict. found is
// false when no entry has the key.
func replayTx(ctx context.Context, tx *db.Tx, in EntryInput, hash string) (*Entry, bool, error) {
	existing, err := tx.GetEntryByKey(ctx, in.IdempotencyKey)
	if db.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("load entry by key: %w", err)
	}
	if existing.PayloadHash != hash || (in.Currency != "" && in.Currency != existing.Currency) {
		return nil, true, riverbank.Errorf(riverbank.EIDEMPOTENCYCONFLICT, "idempotency_key %q was used for a different entry", in.IdempotencyKey).WithDetail("entry_id", existing.ID)
	}
	e, err := loadEntry(ctx, tx.Queries, existing)
	return e, true, err
}

// resolveAccounts finds the entry's accounts by (code, currency) and
// settles the entry's currency: the one given, or the one currency every
// code exists in (409 currency_required when a code exists in several).
// Internal writers (CreateSystemAccounts) get missing system and merchant
// accounts created in the entry's currency; concurrent first uses create
// one (ON CONFLICT DO NOTHING waits for the other writer).
func resolveAccounts(ctx context.Context, tx *db.Tx, in EntryInput, codes []string, cache *accountCache) (string, map[string]db.AccountsByCodesRow, error) {
	currency := in.Currency
	if byCode, ok := cache.get(codes, currency); ok {
		return currency, byCode, nil
	}
	rows, err := tx.AccountsByCodes(ctx, codes)
	if err != nil {
		return "", nil, fmt.Errorf("load accounts: %w", err)
	}
	currencies := map[string][]string{}
	for _, a := range rows {
		currencies[a.Code] = append(currencies[a.Code], a.Currency)
	}
	if currency == "" {
		for _, c := range codes {
			switch cs := currencies[c]; {
			case len(cs) > 1:
				sort.Strings(cs)
				return "", nil, riverbank.Errorf(riverbank.ECURRENCYREQUIRED, "account %q exists in %s: name the entry's currency", c, strings.Join(cs, ", ")).
					WithDetail("account", c).WithDetail("currencies", cs)
			case len(cs) == 1 && currency == "":
				currency = cs[0]
			}
		}
	}
	byCode := make(map[string]db.AccountsByCodesRow, len(codes))
	var missing []string
	for _, c := range codes {
		found := false
		for _, a := range rows {
			if a.Code == c && a.Currency == currency {
				byCode[c], found = a, true
			}
		}
		if !found {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 && in.CreateSystemAccounts && currency == "" {
		return "", nil, invalid("currency is required when every account may be created on first use")
	}
	if len(missing) > 0 && in.CreateSystemAccounts {
		for _, c := range missing {
			if err := ensureSystemAccount(ctx, tx, c, currency); err != nil {
				return "", nil, err
			}
		}
		rows, err := tx.AccountsByCodes(ctx, missing)
		if err != nil {
			return "", nil, fmt.Errorf("load accounts: %w", err)
		}
		for _, a := range rows {
			if a.Currency == currency {
				byCode[a.Code] = a
			}
		}
		missing = missing[:0]
		for _, c := range codes {
			if _, ok := byCode[c]; !ok {
				missing = append(missing, c)
			}
		}
	}
	if len(missing) > 0 {
		if cs := currencies[missing[0]]; len(cs) > 0 {
			return "", nil, riverbank.Errorf(riverbank.EUNPROCESSABLE, "an entry has one currency: account %q exists in %s, the entry is %s", missing[0], strings.Join(cs, ", "), currency).
				WithDetail("accounts", missing)
		}
		if currency == "" {
			return "", nil, riverbank.Errorf(riverbank.EUNPROCESSABLE, "unknown account %q", missing[0]).WithDetail("accounts", missing)
		}
		return "", nil, riverbank.Errorf(riverbank.EUNPROCESSABLE, "unknown account %q in %s", missing[0], currency).WithDetail("accounts", missing)
	}
	cache.put(byCode)
	return currency, byCode, nil
}

// ensureSystemAccount creates a system account or merchant payable in
// currency if it does not exist; other codes are left alone (the caller
// reports them unknown).
func ensureSystemAccount(ctx context.Context, tx *db.Tx, code, currency string) error {
	params := db.InsertAccountParams{Code: code, Currency: currency}
	if sa, ok := systemAccounts[code]; ok {
		params.Name, params.Type, params.System = sa.name, sa.typ, true
	} else if merchantRE.MatchString(code) {
		params.Name, params.Type = "Payable to "+strings.TrimSuffix(strings.TrimPrefix(code, "merchant:"), ":payable"), db.LedgerAccountTypeLIABILITY
	} else {
		return nil
	}
	// ON CONFLICT DO NOTHING: a concurrent first use is fine.
	if _, err := tx.InsertAccount(ctx, params); err != nil && !db.IsNotFound(err) {
		return fmt.Errorf("create account %s %s: %w", code, currency, err)
	}
	return nil
}

// numericInt is n as a Postgres numeric parameter.
func numericInt(n int64) pgtype.Numeric {
	return pgtype.Numeric{Int: big.NewInt(n), Valid: true}
}

// loadEntry loads an entry's postings and derives its state from them: it
// is APPLIED, at its last posting's application, once every posting is.
func loadEntry(ctx context.Context, q *db.Queries, r db.LedgerEntry) (*Entry, error) {
	e := &Entry{
		ID: r.ID, IdempotencyKey: r.IdempotencyKey, Description: r.Description, Currency: r.Currency,
		Urgent: r.Urgent, Status: string(db.LedgerEntryStatusAPPLIED), CreatedAt: r.CreatedAt,
	}
	ps, err := q.EntryPostings(ctx, r.ID)
	if err != nil {
		return nil, fmt.Errorf("load postings: %w", err)
	}
	var last *time.Time
	for _, p := range ps {
		e.Postings = append(e.Postings, Posting{ID: p.ID, EntryID: p.EntryID, Account: p.Account, Currency: r.Currency, AmountMinor: p.AmountMinor, CreatedAt: p.CreatedAt, AppliedAt: p.AppliedAt})
		switch {
		case p.AppliedAt == nil:
			e.Status = string(db.LedgerEntryStatusPENDING)
		case last == nil || p.AppliedAt.After(*last):
			last = p.AppliedAt
		}
	}
	if e.Status == string(db.LedgerEntryStatusAPPLIED) {
		e.AppliedAt = last
	}
	return e, nil
}

// GetEntry returns an entry with its postings.
func (s *Service) GetEntry(ctx context.Context, id int64) (*Entry, error) {
	q := s.store.Queries()
	r, err := q.GetEntry(ctx, id)
	if db.IsNotFound(err) {
		return nil, riverbank.Errorf(riverbank.ENOTFOUND, "journal entry %d not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get entry: %w", err)
	}
	return loadEntry(ctx, q, r)
}

// insertApplyJobsTx inserts ledger.apply for the accounts whose apply
// signal the urgent writer's ledger_request_apply call created
// (RequestApplyAndAppendEvent). That call makes sure a ledger.apply job
// will see this transaction's postings on each account: in one statement it
// takes a shared advisory lock per account, held to commit, and creates the
// apply signal of accounts that have none; the job is enqueued for exactly
// those. A job that already exists cannot finish before this transaction
// commits: its final transaction takes the same lock exclusively. Unlike
// River's unique insert for every writer, which upserts the job row and so
// serialises every writer of a hot account until commit, shared locks do
// not block one another.
func insertApplyJobsTx(ctx context.Context, tx *db.Tx, created []int64) error {
	if len(created) == 0 {
		return nil
	}
	params := make([]river.InsertManyParams, len(created))
	for i, id := range created {
		params[i] = river.InsertManyParams{Args: ApplyArgs{AccountID: id}}
	}
	_, err := tx.InsertMany(ctx, params)
	return err
}

// FinishApplyTx is the apply job's last step, run in the transaction that
// completes the job: it takes the account's apply lock exclusively (waiting
// for every urgent writer holding it shared to commit), deletes the apply
// signal, and applies one more batch, which sees those writers' postings.
func FinishApplyTx(ctx context.Context, tx *db.Tx, accountID int64, limit int) (ApplyResult, error) {
	if err := tx.LockApplySignalExclusive(ctx, accountID); err != nil {
		return ApplyResult{}, fmt.Errorf("lock apply signal: %w", err)
	}
	if err := tx.DeleteApplySignal(ctx, accountID); err != nil {
		return ApplyResult{}, fmt.Errorf("delete apply signal: %w", err)
	}
	return ApplyBatchTx(ctx, tx, accountID, limit)
}
