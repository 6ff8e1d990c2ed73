// Package api is riverbank's HTTP layer: huma v2 operations (one file per
// resource, every route listed in routes.go), the problem+json error model
// and the only map from domain error codes to HTTP statuses, bearer-token
// auth, health and readiness, the offline docs page, /metrics and the River
// UI mount.
package api

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"riverbank"
	"riverbank/internal/db"
	"riverbank/internal/domains"
)

// Services is everything the operations call: the domain services (one
// list, internal/domains) plus the River client and the migrator for the
// operator endpoints.
type Services struct {
	*domains.Services
	// River is the process's River client (system info, dead letters).
	River *river.Client[pgx.Tx]
	// Migrator reports the schema version (system info).
	Migrator *db.Migrator
}

// handlers carries Services into operations. Operations return domain
// errors as they are; problemFrom (errors.go) maps them.
type handlers struct {
	*Services
}

// NewAPI creates the huma API on mux with riverbank's OpenAPI metadata. The
// docs page is ours (registerDocs), not huma's CDN-backed one.
func NewAPI(mux *http.ServeMux) huma.API {
	cfg := huma.DefaultConfig("riverbank", riverbank.Version)
	cfg.Info.Description = "Postgres-only back office for lending and commerce. Every business write and the River jobs it causes commit in one transaction.\n\n" +
		"Errors are RFC 9457 problem+json with a machine-readable `code`; every operation lists each status it can answer and, for each error status, the codes it can carry (also in `x-problem-codes`). " +
		"A refused request (4xx) writes nothing. Text in every body field and parameter must be valid UTF-8 without NUL characters or lone UTF-16 surrogates (else 422 `validation_failed` naming the field; " +
		"inside an item of a batch, that item alone fails with the same code and detail, see POST /v1/batches). " +
		"Field names are exact; an optional field sent as null, or an optional query parameter sent empty, is taken as absent."
	cfg.DocsPath = ""
	cfg.OpenAPIPath = "/openapi"
	cfg.SchemasPath = "/schemas"
	cfg.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		"bearer": {Type: "http", Scheme: "bearer", Description: "A token from RIVERBANK_API_TOKENS."},
	}
	cfg.Security = []map[string][]string{{"bearer": {}}}
	// No $schema links in bodies: clients get plain JSON.
	cfg.Transformers = nil
	cfg.CreateHooks = nil
	return humago.New(mux, cfg)
}

// Register adds every operation to api (see routes.go). It takes a huma.API
// so humatest can exercise operations without a socket.
func Register(api huma.API, s *Services) {
	h := &handlers{Services: s}
	// Every operation's answers are documented the same way (openapi.go),
	// whichever huma.API the operations are registered on.
	oapi := api.OpenAPI()
	oapi.OnAddOperation = append(oapi.OnAddOperation, documentOperation, readBodyFirst)
	logger := s.Logger
	if logger == nil {
		logger = slog.Default()
	}
	api.UseMiddleware(func(ctx huma.Context, next func(huma.Context)) {
		next(huma.WithValue(ctx, loggerKey{}, logger))
	})
	api.UseMiddleware(textRule(api))
	registerRoutes(api, h)
}

func jsonEncode(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}
