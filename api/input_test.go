package api_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"riverbank/internal/ledger"
	"riverbank/internal/testkit"
)

// TestBodyPropertyNamesAreExact: a property name in another case is not
// the property (api/input.go). Above all, a case twin cannot replace a
// validated value with an unvalidated one.
func TestBodyPropertyNamesAreExact(t *testing.T) {
	t.Parallel()
	k := testkit.Tx(t)
	tapi := k.API(t)
	cash, rev := "cash:"+k.Suffix, "rev:"+k.Suffix
	for code, typ := range map[string]string{cash: "ASSET", rev: "INCOME"} {
		_, _, err := k.Services.Ledger.CreateAccount(k.Ctx, ledger.AccountInput{Code: code, Name: code, Type: typ, Currency: "EUR"})
		require.NoError(t, err)
	}
	postings := `"postings":[{"account":"` + cash + `","amount_minor":5},{"account":"` + rev + `","amount_minor":-5}]`
	long := strings.Repeat("k", 300) // over the schema's maxLength of 200
	for _, body := range []string{
		`{"idempotency_key":"ok-` + k.Suffix + `","IDEMPOTENCY_KEY":"` + long + `",` + postings + `}`,
		`{"IDEMPOTENCY_KEY":"upper-` + k.Suffix + `",` + postings + `}`,
		`{"idempotency_key":"nested-` + k.Suffix + `","postings":[{"Account":"` + cash + `","amount_minor":5},{"account":"` + rev + `","amount_minor":-5}]}`,
	} {
		rec := tapi.Post("/v1/journal-entries", "Content-Type: application/json", strings.NewReader(body))
		testkit.RequireProblem(t, rec, "validation_failed", http.StatusUnprocessableEntity)
	}
	require.Zero(t, k.Count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key LIKE '%'||$1", k.Suffix))
	require.Zero(t, k.Count(t, "SELECT count(*) FROM ledger_entry WHERE idempotency_key = $1", long))

	// The exact names still work.
	rec := tapi.Post("/v1/journal-entries", "Content-Type: application/json", strings.NewReader(`{"idempotency_key":"ok-`+k.Suffix+`",`+postings+`}`))
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
}
