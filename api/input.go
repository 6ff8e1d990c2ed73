package api

import "github.com/danielgtaylor/huma/v2"

func init() {
	// Property names in request bodies are exact. huma's default matches
	// them case-insensitively (as encoding/json does when it fills the
	// struct), which accepts keys the OpenAPI document does not have and,
	// with {"idempotency_key": "a", "IDEMPOTENCY_KEY": "b"}, validates "a"
	// while the handler gets the unvalidated "b": two readers of one body
	// disagreeing is how checks in front of an API get bypassed. Found by
	// FuzzCreateJournalEntry; batch items follow the same rule
	// (internal/batch decodeItem).
	huma.ValidateStrictCasing = true
}
