package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"riverbank/internal/testdb"
)

// TestBenchSoakSmoke runs the soak for 20 seconds at half the rate a 5 s
// calibration reached, with a close of business every 5 and orders
// expiring after 5: every operation of the mix must run, every invariant
// must hold under load and after the drain (the command fails otherwise),
// and each interval must print its line.
func TestBenchSoakSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("creates a database and runs for about a minute and a half")
	}
	t.Parallel()
	serverURL := testdb.ServerURL(t)
	env := func(k string) string {
		if k == "DATABASE_URL" {
			return serverURL
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	var out, errOut bytes.Buffer
	// The default --rate 0: calibrate (5 s flat out), then soak at half.
	err := run(ctx, []string{"bench", "soak", "--duration", "20s", "--interval", "5s", "--cob-every", "5s", "--payment-timeout", "5s",
		"--calibrate", "5s", "--clients", "16", "--check-every", "2", "--drain-timeout", "3m",
		// The rare operations more often, so each surely runs in 20 s; and
		// the order chain (receive needs a shipped order, ship a paid one)
		// too: on a loaded machine (a full -race run calibrated to ~1 order/s)
		// receive once never came.
		"--mix", "product.put=8,account.create=8,credit.put=8,batch=8,repay.manuf=8,order.pay=16,order.ship=16,order.receive=16"}, env, &out, &errOut)
	s := out.String()
	require.NoError(t, err, "stdout:\n%s\nstderr:\n%s", s, errOut.String())

	require.Regexp(t, `calibration: the mix flat out from 16 clients for \d+s: [\d.]+ ops/s = [\d.]+ requests/s .* → soaking at [\d.]+ ops/s`, s)
	require.GreaterOrEqual(t, len(regexp.MustCompile(`(?m)^\[\d+:\d\d\] [\d.]+ req/s .* \| rss [\d.]+ MiB`).FindAllString(s, -1)), 4, s)
	require.Regexp(t, `invariants at \d+:\d\d \(under load`, s)
	require.Regexp(t, `invariants \(final, one snapshot after the load and \d+s of draining\):`, s)
	require.Regexp(t, `(?m)^  (\d+)/(\d+) PASS$`, s)
	require.NotRegexp(t, `(?m)^  FAIL `, s)
	require.Contains(t, s, "soak: every invariant held", s)
	// Every kind of the mix ran (the summary lists those with requests),
	// and the close of business closed dates.
	summary := s[strings.Index(s, "summary:"):]
	for _, w := range defaultSoakMix {
		require.Regexp(t, `(?m)^  `+regexp.QuoteMeta(w.kind)+` +[1-9]`, summary, "operation %s never ran", w.kind)
	}
	require.Regexp(t, `(?m)^  cob\.run +[1-9]`, summary)
	require.Regexp(t, `COB: every loan closed once per date, none left behind — [1-9]\d* runs`, s)
	require.Regexp(t, `webhook 1 got every event of its subscription once, in feed order — [1-9]\d* of`, s)
	require.Regexp(t, `webhook 2 got every event of its subscription once, in feed order — [1-9]\d* of`, s)
}

func TestParseSoakWebhooks(t *testing.T) {
	t.Parallel()
	subs, err := parseSoakWebhooks("loan.,case.closed;*; ;order.paid")
	require.NoError(t, err)
	require.Equal(t, [][]string{
		{"case.closed", "loan.created", "loan.overdue", "loan.repaid"},
		nil,
		{"order.paid"},
	}, subs)
	_, err = parseSoakWebhooks("loans.")
	require.ErrorContains(t, err, `"loans." matches no event type`)
	subs, err = parseSoakWebhooks("")
	require.NoError(t, err)
	require.Empty(t, subs)
}

func TestParseSoakMix(t *testing.T) {
	t.Parallel()
	mix, err := parseSoakMix("order.create=30, batch=0")
	require.NoError(t, err)
	for _, w := range mix {
		switch w.kind {
		case skOrderCreate:
			require.Equal(t, 30, w.weight)
		case skBatch:
			require.Zero(t, w.weight)
		}
	}
	_, err = parseSoakMix("order.make=3")
	require.ErrorContains(t, err, "known kind")
	var zero []string
	for _, w := range defaultSoakMix {
		zero = append(zero, w.kind+"=0")
	}
	_, err = parseSoakMix(strings.Join(zero, ","))
	require.ErrorContains(t, err, "every weight is 0")
}
