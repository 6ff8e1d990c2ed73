-- Orders and inventory (SPEC §3).
--
-- Locking rules, followed by every path (API, workers, sweeper):
--   * an order row is locked before any product row;
--   * product rows are locked in sku order (ORDER BY sku FOR ... in one
--     statement), so two multi-item orders never wait on each other in a
--     cycle;
--   * row locks are FOR NO KEY UPDATE: they do not conflict with the KEY
--     SHARE locks that order_item's and order_event's foreign-key checks take
--     on product and orders rows, so inserting items never queues behind (or
--     deadlocks with) a stock update.

-- name: AccountCurrency :one
SELECT currency FROM ledger_account WHERE code = $1;

-- name: UpsertProduct :one
-- Creates a product or replaces its fields. An update applies only while the
-- new on-hand stock still covers the units reserved by CREATED orders: no row
-- comes back otherwise (the row is still locked, so the caller can read why).
INSERT INTO product (sku, name, price_minor, currency, stock_on_hand)
VALUES (sqlc.arg(sku), sqlc.arg(name), sqlc.arg(price_minor), sqlc.arg(currency), sqlc.arg(stock_on_hand))
ON CONFLICT (sku) DO UPDATE
SET name = excluded.name,
    price_minor = excluded.price_minor,
    currency = excluded.currency,
    stock_on_hand = excluded.stock_on_hand,
    updated_at = now()
WHERE product.stock_reserved <= excluded.stock_on_hand
RETURNING sku, name, price_minor, currency, stock_on_hand, stock_reserved, sold, created_at, updated_at,
          (xmax = 0)::boolean AS inserted;

-- name: GetProduct :one
SELECT * FROM product WHERE sku = $1;

-- name: ProductsBySKUs :many
-- An unlocked read: a snapshot of prices and stock to price an order and to
-- turn away orders that cannot fit before opening a transaction.
SELECT sku, price_minor, currency, stock_on_hand, stock_reserved
FROM product
WHERE sku = ANY(sqlc.arg(skus)::text[])
ORDER BY sku;

-- name: ReserveStock :many
-- Reserves every line of a new order in one statement: the product rows are
-- locked in sku order first (the MATERIALIZED CTE; the UPDATE only touches
-- rows it produced), then each line is reserved by the conditional update
-- that can never oversell: only while stock_on_hand - stock_reserved covers
-- the quantity at that instant (and product_reserved_within_on_hand backs it
-- up). Every locked product comes back with the price and availability it
-- had under the lock and whether its line was reserved; the caller rolls
-- back unless all were, at the prices it used.
WITH locked AS MATERIALIZED (
    SELECT p.sku, p.price_minor, p.currency, (p.stock_on_hand - p.stock_reserved)::bigint AS available
    FROM product p
    WHERE p.sku = ANY(sqlc.arg(skus)::text[])
    ORDER BY p.sku
    FOR NO KEY UPDATE
), lines AS (
    SELECT unnest(sqlc.arg(skus)::text[]) AS sku, unnest(sqlc.arg(quantities)::bigint[]) AS quantity
), reserved AS (
    UPDATE product p
    SET stock_reserved = p.stock_reserved + ln.quantity,
        updated_at = now()
    FROM locked l JOIN lines ln ON ln.sku = l.sku
    WHERE p.sku = ANY(sqlc.arg(skus)::text[]) -- an index scan, whatever the estimates
      AND p.sku = l.sku
      AND p.stock_on_hand - p.stock_reserved >= ln.quantity
    RETURNING p.sku
)
SELECT l.sku, l.price_minor, l.currency, l.available, (r.sku IS NOT NULL)::boolean AS reserved
FROM locked l LEFT JOIN reserved r ON r.sku = l.sku
ORDER BY l.sku;

-- name: InsertOrder :one
-- Inserts an order, its items and its CREATED event in one statement.
-- ON CONFLICT DO NOTHING on (buyer_id, identifier) claims the idempotency key:
-- a concurrent creator of the same key waits here until the first commits,
-- then gets no row (and nothing is written).
WITH o AS (
    INSERT INTO orders (buyer_id, merchant_id, identifier, request_hash, total_minor, currency, expires_at)
    VALUES (sqlc.arg(buyer_id), sqlc.arg(merchant_id), sqlc.arg(identifier), sqlc.arg(request_hash),
            sqlc.arg(total_minor), sqlc.arg(currency),
            now() + sqlc.arg(payment_timeout_us)::bigint * interval '1 microsecond')
    ON CONFLICT (buyer_id, identifier) DO NOTHING
    RETURNING *
), items AS (
    INSERT INTO order_item (order_id, line_no, sku, quantity, unit_price_minor, amount_minor)
    SELECT o.id, l.line_no, l.sku, l.quantity, l.unit_price_minor, l.quantity * l.unit_price_minor
    FROM o, (SELECT unnest(sqlc.arg(skus)::text[]) AS sku,
                    unnest(sqlc.arg(quantities)::bigint[]) AS quantity,
                    unnest(sqlc.arg(unit_prices)::bigint[]) AS unit_price_minor,
                    generate_subscripts(sqlc.arg(skus)::text[], 1) AS line_no) AS l
), ev AS (
    INSERT INTO order_event (order_id, from_status, to_status, actor, created_at)
    SELECT o.id, NULL, o.status, sqlc.arg(actor)::text, o.created_at FROM o
)
SELECT * FROM o;

-- name: GetOrder :one
SELECT * FROM orders WHERE id = $1;

-- name: LockOrder :one
SELECT * FROM orders WHERE id = $1 FOR NO KEY UPDATE;

-- name: GetOrderByKey :one
SELECT * FROM orders WHERE buyer_id = $1 AND identifier = $2;

-- name: OrderIDByPaymentID :one
SELECT id FROM orders WHERE payment_id = $1;

-- name: OrderItems :many
SELECT * FROM order_item WHERE order_id = $1 ORDER BY line_no;

-- name: ItemsOfOrders :many
SELECT * FROM order_item WHERE order_id = ANY(sqlc.arg(order_ids)::bigint[]) ORDER BY order_id, line_no;

-- name: ListOrders :many
SELECT * FROM orders
WHERE id < sqlc.arg(before_id)::bigint
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: ListOrdersByStatus :many
SELECT * FROM orders
WHERE status = sqlc.arg(status)::order_status AND id < sqlc.arg(before_id)::bigint
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: ListOrdersByBuyer :many
-- A buyer has few orders: walk orders_buyer_idx and filter the status there.
SELECT * FROM orders
WHERE buyer_id = sqlc.arg(buyer_id)
  AND (sqlc.narg(status)::order_status IS NULL OR status = sqlc.narg(status)::order_status)
  AND id < sqlc.arg(before_id)::bigint
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: ApplyTransition :one
-- Moves an order from one status to the next in one statement: the status
-- guard and the row lock of the UPDATE (so a concurrent transition of the
-- same order either happened before — no row — or waits), the facts of the
-- transition, the history event, and the stock move the transition implies:
-- with move_stock, the order's product rows are locked in sku order (after
-- the order row, which the UPDATE holds) and each counter moves by its
-- coefficient × the line's quantity (confirm: on_hand -1, reserved -1,
-- sold +1; release a reservation: reserved -1; return sold units: on_hand
-- +1, sold -1). The caller checks moved = items.
WITH o AS (
    UPDATE orders SET
        status          = sqlc.arg(to_status)::order_status,
        updated_at      = now(),
        confirmed_at    = CASE WHEN sqlc.arg(to_status)::order_status = 'CONFIRMED' THEN now() ELSE confirmed_at END,
        paid_at         = CASE WHEN sqlc.arg(to_status)::order_status = 'PAID' THEN now() ELSE paid_at END,
        payment_id      = CASE WHEN sqlc.arg(to_status)::order_status = 'PAID' THEN sqlc.narg(payment_id)::text ELSE payment_id END,
        ledger_entry_id = CASE WHEN sqlc.arg(to_status)::order_status = 'PAID' THEN sqlc.narg(ledger_entry_id)::bigint ELSE ledger_entry_id END,
        shipped_at      = CASE WHEN sqlc.arg(to_status)::order_status = 'SHIPPED' THEN now() ELSE shipped_at END,
        tracking_no     = CASE WHEN sqlc.arg(to_status)::order_status = 'SHIPPED' THEN sqlc.narg(tracking_no)::text ELSE tracking_no END,
        completed_at    = CASE WHEN sqlc.arg(to_status)::order_status = 'COMPLETED' THEN now() ELSE completed_at END,
        cancelled_at    = CASE WHEN sqlc.arg(to_status)::order_status = 'CANCELLED' THEN now() ELSE cancelled_at END,
        cancel_reason   = CASE WHEN sqlc.arg(to_status)::order_status = 'CANCELLED' THEN sqlc.narg(cancel_reason)::text ELSE cancel_reason END
    WHERE orders.id = sqlc.arg(order_id)::bigint AND orders.status = sqlc.arg(from_status)::order_status
    RETURNING *
), locked AS MATERIALIZED (
    SELECT p.sku, oi.quantity
    FROM o
    JOIN order_item oi ON oi.order_id = o.id
    JOIN product p ON p.sku = oi.sku
    WHERE sqlc.arg(move_stock)::boolean
    ORDER BY p.sku
    FOR NO KEY UPDATE OF p
), moved AS (
    UPDATE product p
    SET stock_on_hand  = p.stock_on_hand + sqlc.arg(d_on_hand)::bigint * l.quantity,
        stock_reserved = p.stock_reserved + sqlc.arg(d_reserved)::bigint * l.quantity,
        sold           = p.sold + sqlc.arg(d_sold)::bigint * l.quantity,
        updated_at     = now()
    FROM locked l
    WHERE p.sku = ANY(ARRAY(SELECT l2.sku FROM locked l2)) -- an index scan, whatever the estimates
      AND p.sku = l.sku
    RETURNING p.sku
), ev AS (
    INSERT INTO order_event (order_id, from_status, to_status, actor, detail)
    SELECT o.id, sqlc.arg(from_status)::order_status, o.status, sqlc.arg(actor)::text, sqlc.narg(detail)::text FROM o
)
SELECT o.id, o.buyer_id, o.merchant_id, o.identifier, o.request_hash, o.status, o.total_minor, o.currency,
       o.created_at, o.expires_at, o.updated_at, o.confirmed_at, o.paid_at, o.shipped_at, o.completed_at,
       o.cancelled_at, o.cancel_reason, o.payment_id, o.ledger_entry_id, o.tracking_no,
       (SELECT count(*) FROM moved)::integer AS moved,
       (SELECT count(*) FROM order_item oi WHERE oi.order_id = o.id)::integer AS items
FROM o;

-- name: OrderStatus :one
-- An unlocked read for the jobs: a status that no longer needs them
-- (confirmed, paid, cancelled) never changes back, so they can stop here
-- without locking (or writing) anything.
SELECT status FROM orders WHERE id = $1;

-- name: AsyncCommit :exec
-- Lets the current transaction commit without waiting for its WAL flush.
-- Only for job transactions: River records the job completed in a later,
-- synchronous commit, whose flush covers this one, so a crash can lose the
-- effect only together with the completion, and the job then runs again.
SELECT set_config('synchronous_commit', 'off', true);

-- name: OrderExists :one
SELECT EXISTS (SELECT 1 FROM orders WHERE id = $1);

-- name: OrderEvents :many
SELECT * FROM order_event
WHERE order_id = sqlc.arg(order_id) AND id > sqlc.arg(after_id)::bigint
ORDER BY id
LIMIT sqlc.arg(lim);

-- name: StaleCreatedOrders :many
-- Orders waiting in CREATED for longer than older_than_us with no live
-- order.confirm job. The outer scan reads only the partial index
-- orders_created_waiting_idx; the probe uses river_job's GIN index on args.
SELECT o.id
FROM orders o
WHERE o.status = 'CREATED'
  AND o.created_at < now() - sqlc.arg(older_than_us)::bigint * interval '1 microsecond'
  AND NOT EXISTS (
      SELECT 1 FROM river_job j
      WHERE j.args @> jsonb_build_object('order_id', o.id)
        AND j.kind = 'order.confirm'
        AND j.state IN ('available', 'pending', 'retryable', 'running', 'scheduled')
  )
ORDER BY o.created_at, o.id
LIMIT sqlc.arg(lim);

-- name: CountStaleCreatedOrders :one
-- StaleCreatedOrders counted, up to cap (a gauge that stays cheap however
-- large a backlog grows).
SELECT count(*)::bigint FROM (
    SELECT 1
    FROM orders o
    WHERE o.status = 'CREATED'
      AND o.created_at < now() - sqlc.arg(older_than_us)::bigint * interval '1 microsecond'
      AND NOT EXISTS (
          SELECT 1 FROM river_job j
          WHERE j.args @> jsonb_build_object('order_id', o.id)
            AND j.kind = 'order.confirm'
            AND j.state IN ('available', 'pending', 'retryable', 'running', 'scheduled')
      )
    LIMIT sqlc.arg(cap)
) s;
