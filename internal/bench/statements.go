package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrNoStatementStats means pg_stat_statements is not loaded on the server
// (it needs shared_preload_libraries = 'pg_stat_statements' and a restart).
var ErrNoStatementStats = errors.New("pg_stat_statements is not loaded (set shared_preload_libraries = 'pg_stat_statements' and restart Postgres)")

// ResetStatements creates the pg_stat_statements extension in dsn's
// database if needed and resets its counters — of every database on the
// server: run it only on a server that does nothing else that matters.
func ResetStatements(ctx context.Context, dsn string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var loaded bool
	if err := conn.QueryRow(ctx, `SELECT 'pg_stat_statements' = ANY (string_to_array(current_setting('shared_preload_libraries'), ', '))`).Scan(&loaded); err != nil {
		return err
	}
	if !loaded {
		return ErrNoStatementStats
	}
	if _, err := conn.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23505" { // a concurrent CREATE EXTENSION
			return err
		}
	}
	_, err = conn.Exec(ctx, `SELECT pg_stat_statements_reset()`)
	return err
}

// Statement is one normalized statement's totals since the last reset.
type Statement struct {
	// Name is the sqlc query name ("-- name: X") or the statement's start.
	Name      string
	Calls     int64
	TotalMs   float64
	Rows      int64
	SharePct  float64
	PerUnit   float64
	MsPerUnit float64
}

var sqlcName = regexp.MustCompile(`^-- name: (\w+)`)

// Statements returns the statements run in dsn's database since
// ResetStatements, heaviest first, with calls and time per unit (units of
// work done meanwhile, e.g. orders created).
func Statements(ctx context.Context, dsn string, units int64) ([]Statement, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `
SELECT s.query, sum(s.calls)::bigint, sum(s.total_exec_time)::float8, sum(s.rows)::bigint
FROM pg_stat_statements s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND s.query NOT LIKE '%pg_stat_statements%'
GROUP BY s.query`)
	if err != nil {
		return nil, err
	}
	byName := map[string]*Statement{}
	var total float64
	for rows.Next() {
		var q string
		var st Statement
		if err := rows.Scan(&q, &st.Calls, &st.TotalMs, &st.Rows); err != nil {
			return nil, err
		}
		st.Name = statementName(q)
		total += st.TotalMs
		if prev, ok := byName[st.Name]; ok {
			prev.Calls += st.Calls
			prev.TotalMs += st.TotalMs
			prev.Rows += st.Rows
			continue
		}
		byName[st.Name] = &st
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]Statement, 0, len(byName))
	for _, st := range byName {
		if total > 0 {
			st.SharePct = 100 * st.TotalMs / total
		}
		if units > 0 {
			st.PerUnit = float64(st.Calls) / float64(units)
			st.MsPerUnit = st.TotalMs / float64(units)
		}
		out = append(out, *st)
	}
	slices.SortFunc(out, func(a, b Statement) int { return cmp.Compare(b.TotalMs, a.TotalMs) }) // heaviest first
	return out, nil
}

func statementName(q string) string {
	q = strings.TrimSpace(q)
	if m := sqlcName.FindStringSubmatch(q); m != nil {
		return m[1]
	}
	q = strings.Join(strings.Fields(q), " ")
	if len(q) > 60 {
		q = q[:60] + "…"
	}
	return q
}

// PrintStatements prints the statement breakdown per unit (see Statements):
// every statement with at least minShare percent of the time, then the
// totals (statements, i.e. round trips unless pipelined, and database
// execution time per unit).
func PrintStatements(ctx context.Context, w io.Writer, dsn, unit string, units int64, minShare float64) error {
	sts, err := Statements(ctx, dsn, units)
	if err != nil {
		return err
	}
	var calls int64
	var ms float64
	fmt.Fprintf(w, "  statements per %s (pg_stat_statements, %d %ss; background and benchmark reads included):\n", unit, units, unit)
	fmt.Fprintf(w, "    %-36s %9s %10s %9s %7s\n", "statement", "calls", "per "+unit, "ms/"+unit, "time %")
	var rest Statement
	for _, st := range sts {
		calls += st.Calls
		ms += st.TotalMs
		if st.SharePct < minShare {
			rest.Calls += st.Calls
			rest.PerUnit += st.PerUnit
			rest.MsPerUnit += st.MsPerUnit
			rest.SharePct += st.SharePct
			continue
		}
		fmt.Fprintf(w, "    %-36s %9d %10.2f %9.3f %6.1f%%\n", st.Name, st.Calls, st.PerUnit, st.MsPerUnit, st.SharePct)
	}
	if rest.Calls > 0 {
		fmt.Fprintf(w, "    %-36s %9d %10.2f %9.3f %6.1f%%\n", "(the rest)", rest.Calls, rest.PerUnit, rest.MsPerUnit, rest.SharePct)
	}
	if units > 0 {
		fmt.Fprintf(w, "    total: %.1f statements and %.2f ms of statement execution (incl. lock waits) per %s\n", float64(calls)/float64(units), ms/float64(units), unit)
	}
	return nil
}
