# riverbank — `make help` lists the targets.
#
# Tests need Postgres: TEST_DATABASE_URL if set (an admin URL; every test
# package creates its own databases there), otherwise internal/testdb starts a
# private cluster per package from the local Postgres binaries (initdb,
# pg_ctl), otherwise Docker; with none of them the database tests are skipped
# and say why.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X riverbank.Version=$(VERSION)

# Pinned tools. sqlc writes its version into every generated file, so a
# different sqlc makes `make verify` fail even when nothing else changed.
SQLC_VERSION := v1.31.1
SQLC ?= $(shell $(GO) env GOPATH)/bin/sqlc
# staticcheck's module version (the proxy here serves v0.x tags, not the
# 2025.x release names); v0.8.2 is the newest and builds with Go 1.26.
STATICCHECK_VERSION := v0.8.2

# `make test RACE=` runs without the race detector.
RACE ?= -race
TEST_FLAGS ?=

# `make fuzz FUZZTIME=1m` fuzzes each target that long; FUZZ_FLAGS adds go
# test flags (e.g. -parallel=1).
FUZZTIME ?= 10s
FUZZ_FLAGS ?=

# Server that `make river-schema` creates its scratch database on.
PG_ADMIN_URL ?= $(or $(TEST_DATABASE_URL),postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable)

# `make bench SCENARIO=<name> BENCH_ARGS='...'`; without SCENARIO, lists them.
SCENARIO ?=
BENCH_ARGS ?=

.PHONY: help
help: ## list targets
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

.PHONY: run
run: ## run locally: private Postgres (or DATABASE_URL), migrate, serve on :8080
	$(GO) run ./cmd/riverbank dev

.PHONY: build
build: ## build bin/riverbank with the version from git
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/riverbank ./cmd/riverbank

.PHONY: test
test: ## run every test against real Postgres (RACE= to skip the race detector)
	$(GO) test $(RACE) -count=1 $(TEST_FLAGS) ./...

# Every `func FuzzX(f *testing.F)` in the tree, one at a time (go test
# -fuzz takes one target per run), each for FUZZTIME. An input that fails
# is written to the package's testdata/fuzz/FuzzX/: commit it, and it
# becomes a seed that every `make test` runs. The API targets use the test
# database (TEST_DATABASE_URL, else a private cluster per process: set it).
.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 10s): make fuzz FUZZTIME=1m
	@targets=$$(grep -rlE '^func Fuzz[A-Za-z0-9_]+\(f \*testing\.F\)' --include='*_test.go' . | sort | while read -r file; do \
		for name in $$(grep -oE '^func Fuzz[A-Za-z0-9_]+' "$$file" | cut -d' ' -f2); do echo "./$$(dirname "$${file#./}"):$$name"; done; \
	done); \
	[ -n "$$targets" ] || { echo "no fuzz targets found" >&2; exit 1; }; \
	for t in $$targets; do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "== $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test "$$pkg" -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $(FUZZ_FLAGS); \
	done

.PHONY: tools
tools: ## install the pinned sqlc (needs cgo)
	CGO_ENABLED=1 GOBIN=$(dir $(SQLC)) $(GO) install github.com/sqlc-dev/sqlc/cmd/sqlc@$(SQLC_VERSION)

.PHONY: check-sqlc
check-sqlc:
	@v=$$($(SQLC) version 2>/dev/null || true); \
	if [ "$$v" != "$(SQLC_VERSION)" ]; then \
		echo "sqlc $(SQLC_VERSION) is needed at $(SQLC) (found: $${v:-none}); run 'make tools'" >&2; exit 1; \
	fi

.PHONY: generate
generate: check-sqlc ## regenerate internal/db from queries/ and schema.sql
	$(SQLC) generate

.PHONY: verify
verify: check-sqlc ## fail when generated code is stale or a query is invalid
	@$(SQLC) diff || { echo "generated code in internal/db is stale: run 'make generate' and commit the result" >&2; exit 1; }
	$(SQLC) vet

.PHONY: lint
lint: ## go vet, gofmt and staticcheck
	$(GO) vet ./...
	@files=$$(git ls-files --cached --others --exclude-standard '*.go' | while read -r f; do if [ -f "$$f" ]; then echo "$$f"; fi; done); \
	[ -n "$$files" ] || { echo "no Go files found by git ls-files" >&2; exit 1; }; \
	bad=$$(gofmt -l $$files); \
	if [ -n "$$bad" ]; then echo "not gofmt-ed (run gofmt -w):" >&2; echo "$$bad" >&2; exit 1; fi
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

.PHONY: bench
bench: ## run a benchmark: make bench SCENARIO=<name> BENCH_ARGS='...' (no SCENARIO lists them)
ifeq ($(SCENARIO),)
	$(GO) run ./cmd/riverbank bench --help
else
	$(GO) run ./cmd/riverbank bench $(SCENARIO) $(BENCH_ARGS)
endif

# River's tables are owned by rivermigrate; sqlc needs their definitions to
# type-check queries over river_job. This migrates a scratch database with
# `riverbank migrate` and keeps only River's objects (named river_*) from
# its schema dump, without comments, SET lines or pg_dump's per-run
# \restrict keys, so the file changes only when River's schema does.
.PHONY: river-schema
river-schema: ## regenerate internal/db/river_schema.sql (needs psql, pg_dump, pg_restore and a server at PG_ADMIN_URL)
	@admin='$(PG_ADMIN_URL)'; \
	name="riverbank_river_schema_$$$$"; \
	url=$$(printf '%s' "$$admin" | sed -E "s#^(postgres(ql)?://[^/?]*)(/[^?]*)?#\1/$$name#"); \
	tmp=$$(mktemp -d); \
	trap 'psql -X -q "$$admin" -c "DROP DATABASE IF EXISTS $$name WITH (FORCE)" >/dev/null; rm -rf "$$tmp"' EXIT; \
	psql -X -q -v ON_ERROR_STOP=1 "$$admin" -c "CREATE DATABASE $$name" >/dev/null; \
	$(GO) run ./cmd/riverbank migrate --database-url "$$url" >/dev/null; \
	river_version=$$($(GO) list -m -f '{{.Version}}' github.com/riverqueue/river); \
	migration=$$(psql -X -A -t -q "$$url" -c 'SELECT max(version) FROM river_migration'); \
	pg_dump --schema-only --no-owner --no-privileges --no-comments -T 'riverbank_*' --format=custom --file="$$tmp/dump" "$$url"; \
	pg_restore --list "$$tmp/dump" | grep -E '^[0-9]+; [0-9]+ [0-9]+ [A-Z ]+ public river_' > "$$tmp/list"; \
	{ \
		echo "-- River's schema at github.com/riverqueue/river $$river_version (River migration $$migration), dumped with"; \
		echo "-- pg_dump --schema-only after rivermigrate. sqlc reads it so queries can use river_job;"; \
		echo "-- it is never applied (rivermigrate owns these tables). Regenerate with 'make river-schema'."; \
		echo; \
		pg_restore --schema-only --no-owner --no-privileges --no-comments --use-list="$$tmp/list" --file=- "$$tmp/dump" \
			| grep -v -E '^(--|SET |SELECT pg_catalog\.set_config|\\(un)?restrict )' \
			| cat -s \
			| awk 'NF { if (seen) printf "%s", gap; print; seen = 1; gap = ""; next } { gap = gap "\n" }'; \
	} > "$$tmp/river_schema.sql"; \
	grep -q 'CREATE TABLE public.river_job ' "$$tmp/river_schema.sql" || { echo "river-schema: dump has no river_job table" >&2; exit 1; }; \
	mv "$$tmp/river_schema.sql" internal/db/river_schema.sql; \
	echo "wrote internal/db/river_schema.sql (River $$river_version, migration $$migration); now run 'make generate'"
