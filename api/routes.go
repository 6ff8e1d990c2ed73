package api

import "github.com/danielgtaylor/huma/v2"

// registerRoutes is the one place that lists every API operation. Plain
// net/http routes (health, docs, metrics, River UI) are listed in
// NewHandler; the River UI's are in registerRiverUI: GET and POST
// /riverui/login (form, token check), POST /riverui/logout, GET /riverui
// (redirect) and the UI itself under /riverui/ (pages, assets,
// /riverui/api/...).
func registerRoutes(api huma.API, h *handlers) {
	h.registerSystem(api)      // GET /v1/system/info
	h.registerLedger(api)      // /v1/accounts, /v1/journal-entries, /v1/ledger/trial-balance
	h.registerProducts(api)    // PUT/GET /v1/products/{sku}
	h.registerOrders(api)      // /v1/orders, /v1/orders/{id}, .../events, .../pay|ship|receive|cancel
	h.registerLending(api)     // /v1/credit-lines/{borrower_id}, /v1/loans, /v1/loans/{id}, .../repayments
	h.registerCOB(api)         // /v1/cob-runs, /v1/cob-runs/{date}, .../retry-failures, /v1/cases, /v1/cases/{id}, /v1/loans/{id}/accruals
	h.registerEvents(api)      // GET /v1/events
	h.registerDeadLetters(api) // GET /v1/dead-letters, GET /v1/dead-letters/{job_id}, POST .../retry
	h.registerBatches(api)     // POST /v1/batches, GET /v1/batches/{id}, GET .../items, POST .../cancel
	h.registerWebhooks(api)    // /v1/webhook-subscriptions, /v1/webhook-subscriptions/{id}, .../deliveries
}
