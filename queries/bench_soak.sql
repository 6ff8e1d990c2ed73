-- Queries used only by `riverbank bench soak` (cmd/riverbank/bench_soak*.go):
-- the invariant checks it runs against the database directly, in one
-- REPEATABLE READ snapshot, and the backlog it waits on before the final
-- check. Each check returns the rows (or the count) that break it, so a
-- healthy database answers with nothing; the scratch database of a soak is
-- small, so whole-table scans are fine here.

-- name: BenchSoakUnbalancedEntries :one
-- Entries whose postings do not sum to zero (the deferred trigger forbids
-- it; checked, not assumed).
SELECT count(*)::bigint FROM (
    SELECT entry_id FROM ledger_posting GROUP BY entry_id HAVING sum(amount_minor) <> 0
) t;

-- name: BenchSoakStockMismatches :many
-- Products breaking a stock invariant: reserved must equal the quantities
-- of CREATED orders, sold the quantities of confirmed orders not cancelled
-- (CONFIRMED, PAID, SHIPPED, COMPLETED), and on_hand + sold what the last
-- PUT left (the data of the product's newest product.stock_set event: PUT
-- locks the row before it appends, so the newest id is the last PUT).
-- Counters from product_stock: the row plus its logged moves.
SELECT p.sku, p.stock_on_hand::bigint AS stock_on_hand, p.stock_reserved::bigint AS stock_reserved, p.sold::bigint AS sold,
       coalesce(r.reserved, 0)::bigint AS created_quantity,
       coalesce(r.sold, 0)::bigint AS confirmed_quantity,
       coalesce(e.total, -1)::bigint AS put_total
FROM product_stock p
LEFT JOIN (
    SELECT i.sku,
           sum(i.quantity) FILTER (WHERE o.status = 'CREATED') AS reserved,
           sum(i.quantity) FILTER (WHERE o.status IN ('CONFIRMED', 'PAID', 'SHIPPED', 'COMPLETED')) AS sold
    FROM order_item i JOIN orders o ON o.id = i.order_id
    GROUP BY i.sku
) r ON r.sku = p.sku
LEFT JOIN LATERAL (
    SELECT (ev.data->>'stock_on_hand')::bigint + (ev.data->>'sold')::bigint AS total
    FROM event ev
    WHERE ev.type = 'product.stock_set' AND ev.subject_id = p.sku
    ORDER BY ev.id DESC
    LIMIT 1
) e ON true
WHERE p.stock_reserved <> coalesce(r.reserved, 0)
   OR p.sold <> coalesce(r.sold, 0)
   OR p.stock_on_hand + p.sold <> coalesce(e.total, -1)
ORDER BY p.sku;

-- name: BenchSoakOrders :one
-- Orders by state, and the ones breaking an order invariant: still unpaid
-- (CREATED, CONFIRMED) more than grace after expires_at, a status other
-- than the last transition of the order's history, or expired (cancelled
-- with payment_timeout) before expires_at.
SELECT count(*)::bigint AS orders,
       count(*) FILTER (WHERE o.status IN ('CREATED', 'CONFIRMED'))::bigint AS unpaid,
       count(*) FILTER (WHERE o.status IN ('PAID', 'SHIPPED', 'COMPLETED'))::bigint AS paid,
       count(*) FILTER (WHERE o.status = 'CANCELLED' AND o.cancel_reason = 'payment_timeout')::bigint AS expired,
       count(*) FILTER (WHERE o.status = 'CANCELLED' AND o.cancel_reason <> 'payment_timeout')::bigint AS cancelled,
       count(*) FILTER (WHERE o.status IN ('CREATED', 'CONFIRMED')
                          AND o.expires_at < now() - make_interval(secs => sqlc.arg(grace_seconds)::float8))::bigint AS unpaid_past_expiry,
       count(*) FILTER (WHERE h.to_status IS DISTINCT FROM o.status)::bigint AS history_mismatch,
       count(*) FILTER (WHERE o.cancel_reason = 'payment_timeout' AND o.cancelled_at < o.expires_at)::bigint AS expired_early
FROM orders o
LEFT JOIN LATERAL (
    SELECT ev.to_status FROM order_event ev WHERE ev.order_id = o.id ORDER BY ev.id DESC LIMIT 1
) h ON true;

-- name: BenchSoakCreditMismatches :many
-- Credit lines whose used_minor differs from the principal their loans
-- still owe plus the principal of repayments whose credit.restore has not
-- run yet (zero once the queue drains).
SELECT c.borrower_id, c.used_minor,
       coalesce(l.outstanding, 0)::bigint AS outstanding_minor,
       coalesce(u.unrestored, 0)::bigint AS unrestored_minor
FROM credit_line c
LEFT JOIN (
    SELECT borrower_id, sum(principal_outstanding_minor) AS outstanding FROM loan GROUP BY borrower_id
) l ON l.borrower_id = c.borrower_id
LEFT JOIN (
    SELECT ln.borrower_id, sum(r.principal_minor) AS unrestored
    FROM repayment r JOIN loan ln ON ln.id = r.loan_id
    WHERE r.principal_minor > 0
      AND NOT EXISTS (SELECT 1 FROM credit_restoration cr WHERE cr.repayment_id = r.id)
    GROUP BY ln.borrower_id
) u ON u.borrower_id = c.borrower_id
WHERE c.used_minor <> coalesce(l.outstanding, 0) + coalesce(u.unrestored, 0)
ORDER BY c.borrower_id;

-- name: BenchSoakCollection :one
-- Collection invariants: borrowers with more than one OPEN case; OVERDUE
-- loans without exactly one open item; open items of loans that are not
-- OVERDUE; OVERDUE loans whose open item is not (yet) in an OPEN case of
-- their own borrower (case.merge is asynchronous: zero once it drains);
-- OPEN cases without an open item.
SELECT
    (SELECT count(*) FROM (SELECT borrower_id FROM collection_case WHERE status = 'OPEN' GROUP BY borrower_id HAVING count(*) > 1) t)::bigint AS borrowers_with_open_cases_gt1,
    (SELECT count(*) FROM loan l WHERE l.status = 'OVERDUE'
        AND (SELECT count(*) FROM collection_item i WHERE i.loan_id = l.id AND i.resolved_at IS NULL) <> 1)::bigint AS overdue_without_one_item,
    (SELECT count(*) FROM collection_item i JOIN loan l ON l.id = i.loan_id
        WHERE i.resolved_at IS NULL AND l.status <> 'OVERDUE')::bigint AS open_items_not_overdue,
    (SELECT count(*) FROM loan l WHERE l.status = 'OVERDUE' AND NOT EXISTS (
        SELECT 1 FROM collection_item i JOIN collection_case c ON c.id = i.case_id
        WHERE i.loan_id = l.id AND i.resolved_at IS NULL AND c.status = 'OPEN' AND c.borrower_id = l.borrower_id))::bigint AS overdue_not_in_open_case,
    (SELECT count(*) FROM collection_case c WHERE c.status = 'OPEN' AND NOT EXISTS (
        SELECT 1 FROM collection_item i WHERE i.case_id = c.id AND i.resolved_at IS NULL))::bigint AS open_cases_without_items,
    (SELECT count(*) FROM loan WHERE status = 'OVERDUE')::bigint AS overdue_loans,
    (SELECT count(*) FROM collection_case WHERE status = 'OPEN')::bigint AS open_cases,
    (SELECT count(*) FROM collection_case WHERE status = 'CLOSED')::bigint AS closed_cases;

-- name: BenchSoakCOB :one
-- Close-of-business invariants. closings_by_runs is what the runs counted
-- (loans_done, written by the chunk transaction that closes the loans);
-- closings_by_loans is what the loans carry: a loan is closed once per date
-- from its start_date through its last_closed_date (the guard on
-- last_closed_date admits only the next date), so the two are equal
-- exactly when no (loan, date) was closed twice or skipped. left_behind:
-- loans still open that a COMPLETED date should have closed.
SELECT
    (SELECT count(*) FROM cob_run)::bigint AS runs,
    (SELECT count(*) FROM cob_run WHERE status = 'COMPLETED')::bigint AS completed,
    (SELECT count(*) FROM cob_run WHERE status = 'FAILED')::bigint AS failed,
    (SELECT coalesce(sum(loans_failed), 0) FROM cob_run)::bigint AS loans_failed,
    (SELECT count(*) FROM cob_run WHERE status = 'COMPLETED' AND trial_balance IS NULL)::bigint AS without_trial_balance,
    (SELECT count(*) FROM cob_run WHERE trial_balance IS NOT NULL AND (trial_balance->>'balanced')::boolean IS NOT TRUE)::bigint AS unbalanced,
    (SELECT coalesce(sum(loans_done), 0) FROM cob_run)::bigint AS closings_by_runs,
    (SELECT coalesce(sum(last_closed_date - start_date + 1), 0) FROM loan WHERE last_closed_date IS NOT NULL)::bigint AS closings_by_loans,
    (SELECT count(*) FROM loan l WHERE l.status <> 'REPAID'
        AND l.start_date <= (SELECT max(business_date) FROM cob_run WHERE status = 'COMPLETED')
        AND (l.last_closed_date IS NULL OR l.last_closed_date < (SELECT max(business_date) FROM cob_run WHERE status = 'COMPLETED')))::bigint AS left_behind,
    (SELECT count(*) FROM loan_accrual_month)::bigint AS accrual_months;

-- name: BenchSoakFeedAfter :many
-- The feed in its order ((txid, id)) after a position, of some types (NULL:
-- all), whatever the snapshot xmin: a reader that received an event has, by
-- the feed's guarantee, seen every event before it, and those are all
-- committed.
SELECT txid, id FROM event
WHERE (txid, id) > (sqlc.arg(after_txid)::bigint, sqlc.arg(after_id)::bigint)
  AND (sqlc.narg(types)::text[] IS NULL OR type = ANY(sqlc.narg(types)::text[]))
ORDER BY txid, id
LIMIT sqlc.arg(lim);

-- name: BenchSoakEventCount :one
-- Events of some types (NULL: all).
SELECT count(*)::bigint FROM event
WHERE sqlc.narg(types)::text[] IS NULL OR type = ANY(sqlc.narg(types)::text[]);

-- name: BenchSoakBatches :one
-- Batches not COMPLETED and items not finished.
SELECT (SELECT count(*) FROM batch)::bigint AS batches,
       (SELECT count(*) FROM batch WHERE status <> 'COMPLETED')::bigint AS not_completed,
       (SELECT count(*) FROM batch_item)::bigint AS items,
       (SELECT count(*) FROM batch_item WHERE status = 'PENDING')::bigint AS items_pending;

-- name: BenchSoakBatchFailures :many
-- Failed batch items by operation and problem code.
SELECT b.operation::text AS operation, coalesce(i.error_code, '')::text AS code, count(*)::bigint AS items
FROM batch_item i JOIN batch b ON b.id = i.batch_id
WHERE i.status = 'FAILED'
GROUP BY 1, 2
ORDER BY 1, 2;

-- name: BenchSoakWebhookDeliveries :one
-- A subscription's delivery rows: attempted, delivered, and attempts
-- beyond the first (retries).
SELECT count(*)::bigint AS rows,
       count(*) FILTER (WHERE delivered_at IS NOT NULL)::bigint AS delivered,
       coalesce(sum(attempts - 1), 0)::bigint AS retries
FROM webhook_delivery
WHERE subscription_id = sqlc.arg(subscription_id);

-- name: BenchSoakBacklog :one
-- What the final check waits for: work accepted during the load that
-- asynchronous jobs have not finished yet.
SELECT
    (SELECT count(*) FROM ledger_account a JOIN ledger_posting p ON p.account_id = a.id
      WHERE p.marked_at IS NULL AND (p.xid, p.id) >= (a.applied_through_xid, a.applied_through_id))::bigint AS pending_postings,
    (SELECT count(*) FROM repayment r WHERE r.principal_minor > 0
        AND NOT EXISTS (SELECT 1 FROM credit_restoration cr WHERE cr.repayment_id = r.id))::bigint AS unrestored,
    ((SELECT count(*) FROM collection_item WHERE case_id IS NULL AND resolved_at IS NULL)
        + (SELECT count(*) FROM collection_merge_signal))::bigint AS unmerged,
    (SELECT count(*) FROM cob_run WHERE status <> 'COMPLETED' OR trial_balance IS NULL)::bigint AS cob_open,
    (SELECT count(*) FROM batch WHERE status = 'RUNNING')::bigint AS batches_running,
    (SELECT count(*) FROM orders WHERE status IN ('CREATED', 'CONFIRMED'))::bigint AS orders_unpaid,
    (SELECT count(*) FROM event)::bigint AS events;

-- name: BenchSoakDatabaseSize :one
SELECT pg_database_size(current_database())::bigint;

-- name: BenchSoakOldestXacts :many
-- The oldest transaction on the whole server that holds a transaction id.
-- Transaction ids are server-wide, so it holds back the snapshot xmin of
-- every database, and the events feed serves only events below that xmin:
-- while it runs, no newer event can be read, whatever database it is in.
SELECT extract(epoch FROM now() - a.xact_start)::float8 AS seconds,
       coalesce(a.datname, '')::text AS datname,
       (a.datname IS NOT DISTINCT FROM current_database())::boolean AS ours,
       coalesce(a.state, '')::text AS state,
       left(regexp_replace(coalesce(a.query, ''), '\s+', ' ', 'g'), 80)::text AS query
FROM pg_catalog.pg_stat_activity a
WHERE a.backend_xid IS NOT NULL AND a.xact_start IS NOT NULL
ORDER BY a.xact_start
LIMIT 1;

-- name: BenchSoakDeadTuples :many
-- The tables with the most dead row versions, and the total over all
-- tables: what vacuum has not reclaimed yet (a soak on a server with
-- autovacuum off, or with old transactions holding the horizon back,
-- shows it growing).
SELECT relname::text AS relname, n_dead_tup::bigint AS dead,
       (sum(n_dead_tup) OVER ())::bigint AS total
FROM pg_catalog.pg_stat_user_tables
ORDER BY n_dead_tup DESC
LIMIT 3;

-- name: BenchSoakAutovacuum :one
SELECT current_setting('autovacuum')::text;
