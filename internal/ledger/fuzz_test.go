package ledger_test

import (
	"bytes"
	"encoding/binary"
	"math/big"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"

	"riverbank"
	"riverbank/internal/ledger"
	"riverbank/internal/testkit"
)

// fuzzAccounts are the codes a fuzzed posting picks from: valid ones and
// ones the code rule must refuse.
var fuzzAccounts = []string{"cash:eu", "revenue", "merchant:m-1:payable", "Cash", "", "a b", "-x", strings.Repeat("a", 129)}

// accountCodeRule is the documented account code: lower-case letters,
// digits and _ . : -, starting with a letter or digit, at most 128.
var accountCodeRule = regexp.MustCompile(`^[a-z0-9][a-z0-9_.:-]{0,127}$`)

// postingsFrom turns fuzz bytes into postings: 9 bytes each, an account
// index and a big-endian amount. When balance is set the last amount is
// made to balance the others (if that fits in an int64), so the fuzzer
// reaches the accepting side of the sum rule often.
func postingsFrom(raw []byte, balance bool) []ledger.PostingInput {
	var ps []ledger.PostingInput
	for len(raw) >= 9 {
		ps = append(ps, ledger.PostingInput{
			Account:     fuzzAccounts[int(raw[0])%len(fuzzAccounts)],
			AmountMinor: int64(binary.BigEndian.Uint64(raw[1:9])),
		})
		raw = raw[9:]
	}
	if balance && len(ps) > 1 {
		sum := new(big.Int)
		for _, p := range ps[:len(ps)-1] {
			sum.Add(sum, big.NewInt(p.AmountMinor))
		}
		if sum.Neg(sum).IsInt64() {
			ps[len(ps)-1].AmountMinor = sum.Int64()
		}
	}
	return ps
}

// FuzzEntryValidate: a journal entry passes validation only if it is a
// real double entry — at least two and at most 100 postings, valid account
// codes, every amount non-zero and within ±10^15, and an exact sum of zero
// (computed here in big integers, so an int64 overflow that wraps to zero
// would be caught) — with a usable key and description. A refusal is
// always validation_failed.
func FuzzEntryValidate(f *testing.F) {
	p := func(acct byte, amt int64) []byte {
		b := make([]byte, 9)
		b[0] = acct
		binary.BigEndian.PutUint64(b[1:], uint64(amt))
		return b
	}
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	f.Add("je-1", "sale", "EUR", cat(p(0, 100), p(1, -100)), false)
	f.Add("je-2", "", "", cat(p(0, ledger.MaxAmountMinor), p(1, -ledger.MaxAmountMinor)), false)
	f.Add("je-3", "", "", cat(p(0, ledger.MaxAmountMinor+1), p(1, -ledger.MaxAmountMinor-1)), false)
	f.Add("je-4", "", "", cat(p(0, 1<<62), p(0, 1<<62), p(1, -(1<<62)), p(1, -(1<<62))), false)
	f.Add("je-5", "", "", cat(p(0, 1<<63-1), p(0, 1), p(1, -1<<63)), false)
	f.Add("je-6", "", "eur", cat(p(0, 0), p(1, 0)), false)
	f.Add("", "", "", cat(p(0, 1), p(1, -1)), false)
	f.Add("k\x00", "\xff", "", cat(p(0, 1), p(1, -1)), false)
	f.Add("je-7", "", "", cat(p(0, 5), p(3, -5)), true)
	f.Add("je-8", "", "", []byte(strings.Repeat("\x00\x00\x00\x00\x00\x00\x00\x00\x01", 101)), true)
	f.Fuzz(func(t *testing.T, key, desc, currency string, raw []byte, balance bool) {
		in := ledger.EntryInput{IdempotencyKey: key, Description: desc, Currency: currency, Postings: postingsFrom(raw, balance)}
		err := in.Validate()
		if err != nil {
			testkit.RequireCode(t, err, riverbank.EINVALID)
			return
		}
		require.NotEmpty(t, key)
		require.LessOrEqual(t, utf8.RuneCountInString(key), ledger.MaxKeyLen)
		require.True(t, riverbank.ValidText(key) && riverbank.ValidText(desc))
		require.NotContains(t, key, string(utf8.RuneError))
		require.LessOrEqual(t, utf8.RuneCountInString(desc), ledger.MaxDescriptionLen)
		require.GreaterOrEqual(t, len(in.Postings), 2)
		require.LessOrEqual(t, len(in.Postings), ledger.MaxPostings)
		require.True(t, currency == "" || regexp.MustCompile(`^[A-Z]{3}$`).MatchString(currency), "currency %q", currency)
		sum := new(big.Int)
		for _, p := range in.Postings {
			require.Regexp(t, accountCodeRule, p.Account)
			require.NotZero(t, p.AmountMinor)
			require.LessOrEqual(t, new(big.Int).Abs(big.NewInt(p.AmountMinor)).Cmp(big.NewInt(ledger.MaxAmountMinor)), 0, "amount %d", p.AmountMinor)
			sum.Add(sum, big.NewInt(p.AmountMinor))
		}
		require.Zero(t, sum.Sign(), "postings sum to %v", sum)
	})
}
