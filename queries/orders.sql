-- Orders and inventory (SPEC §3).
--
-- Locking rules, followed by every path (API, workers, sweeper):
--   * an order row is locked before any product row;
--   * product rows are locked in sku order (ORDER BY sku FOR ... in one
--     statement), so two multi-item orders never wait on each other in a
--     cycle, and updated by a later statement (orders_reserve and
--     orders_move_stock in schema.sql say why);
--   * row locks are FOR NO KEY UPDATE: they do not conflict with the KEY
--     SHARE locks that order_item's and order_event's foreign-key checks take
--     on product and orders rows, so inserting items never queues behind (or
--     deadlocks with) a stock update.

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
-- The product with its true stock counters (product_stock: the row plus
-- the confirmations not folded into it yet).
SELECT sku, name, price_minor, currency,
       stock_on_hand::bigint AS stock_on_hand, stock_reserved::bigint AS stock_reserved, sold::bigint AS sold,
       created_at, updated_at
FROM product_stock WHERE sku = $1;

-- name: FoldStockMoves :one
-- Folds the pending stock moves of the given products into their rows
-- (orders_fold_stock_moves): PUT /v1/products does it before it sets the
-- on-hand count.
SELECT orders_fold_stock_moves(sqlc.arg(skus)::text[])::integer AS folded;

-- name: FoldAllStockMoves :one
-- Folds the pending stock moves committed by now, product by product in sku
-- order (orders_fold_stock_moves): with skip_locked only the products no
-- one holds at this instant (the rest wait for a later fold), without it
-- every product, waiting for each lock. The lingering confirmer folds
-- about once a second (skip_locked; every tenth time waiting, so a product
-- creators hold almost without a break, a flash sale's, is folded too) and
-- when it ends; order.sweep folds waiting.
SELECT orders_fold_stock_moves(ARRAY(
    SELECT m.sku FROM product_stock_pending m
    WHERE (m.on_hand, m.reserved, m.sold) <> (0, 0, 0)
    ORDER BY m.sku), sqlc.arg(skip_locked)::boolean)::integer AS folded;

-- name: ProductsBySKUs :many
-- An unlocked read: a snapshot of prices and stock to price an order and to
-- turn away orders that cannot fit before opening a transaction. Read from
-- the row: stock moves still pending (schema step 13) never change
-- on_hand - reserved, the availability this is for.
SELECT sku, price_minor, currency, stock_on_hand, stock_reserved
FROM product
WHERE sku = ANY(sqlc.arg(skus)::text[])
ORDER BY sku;

-- name: InsertOrder :one
-- Places an order in one statement: inserts the order, its items, its
-- CREATED history event and its order.created feed event, then reserves every line with orders_reserve (schema.sql:
-- the products locked in sku order, then the conditional update that can
-- never oversell), and reports the reservation: whether every line was
-- reserved, the first sku that was not (with what was available), and
-- whether the locked prices are the unit prices the order was priced with.
-- The caller rolls back unless all lines were reserved at those prices.
-- ON CONFLICT DO NOTHING on (buyer_id, identifier) claims the idempotency
-- key: a concurrent creator of the same key waits here until the first
-- commits, then gets no row, and nothing is written or locked.
WITH lines AS (
    SELECT unnest(sqlc.arg(skus)::text[]) AS sku,
           unnest(sqlc.arg(quantities)::bigint[]) AS quantity,
           unnest(sqlc.arg(unit_prices)::bigint[]) AS unit_price_minor,
           generate_subscripts(sqlc.arg(skus)::text[], 1) AS line_no
), o AS (
    INSERT INTO orders (buyer_id, merchant_id, identifier, request_hash, total_minor, currency, expires_at)
    VALUES (sqlc.arg(buyer_id), sqlc.arg(merchant_id), sqlc.arg(identifier), sqlc.arg(request_hash),
            sqlc.arg(total_minor), sqlc.arg(currency),
            now() + sqlc.arg(payment_timeout_us)::bigint * interval '1 microsecond')
    ON CONFLICT (buyer_id, identifier) DO NOTHING
    RETURNING *
), items AS (
    INSERT INTO order_item (order_id, line_no, sku, quantity, unit_price_minor, amount_minor)
    SELECT o.id, l.line_no, l.sku, l.quantity, l.unit_price_minor, l.quantity * l.unit_price_minor
    FROM o, lines l
), ev AS (
    INSERT INTO order_event (order_id, from_status, to_status, actor, created_at)
    SELECT o.id, NULL, o.status, sqlc.arg(actor)::text, o.created_at FROM o
), feed AS (
    -- The order.created event (event_type '' when events are off: bench
    -- events only), as the stored row; see schema step 10.
    INSERT INTO event (type, subject_type, subject_id, data, data_kind)
    SELECT sqlc.arg(event_type)::text, 'order', o.id::text,
           to_jsonb(o) || jsonb_build_object('items', (
               SELECT jsonb_agg(jsonb_build_object('sku', l.sku, 'line_no', l.line_no, 'quantity', l.quantity,
                                                   'unit_price_minor', l.unit_price_minor,
                                                   'amount_minor', l.quantity * l.unit_price_minor) ORDER BY l.line_no)
               FROM lines l)),
           'order_row'
    FROM o WHERE sqlc.arg(event_type)::text <> ''
), res AS (
    SELECT r.sku, r.price_minor, r.currency, r.available, r.reserved
    FROM o, LATERAL orders_reserve(sqlc.arg(skus)::text[], sqlc.arg(quantities)::bigint[]) AS r(sku, price_minor, currency, available, reserved)
), short AS (
    SELECT res.sku, res.available FROM res WHERE NOT res.reserved ORDER BY res.sku LIMIT 1
), confirmer AS (
    -- the confirm request (schema step 12): true when this order created
    -- the signal, so the caller inserts the lingering order.confirm job.
    -- confirmer_requested stays before every column that reads res in the
    -- target list below (evaluated left to right): the order asks before
    -- orders_reserve locks any product, so a creator never waits on another
    -- creator's new signal row while holding product locks.
    SELECT orders_request_confirm() AS requested FROM o
)
SELECT o.id, o.buyer_id, o.merchant_id, o.identifier, o.request_hash, o.status, o.total_minor, o.currency,
       o.created_at, o.expires_at, o.updated_at, o.confirmed_at, o.paid_at, o.shipped_at, o.completed_at,
       o.cancelled_at, o.cancel_reason, o.payment_id, o.ledger_entry_id, o.tracking_no,
       coalesce((SELECT confirmer.requested FROM confirmer), false)::boolean AS confirmer_requested,
       (SELECT count(*) FROM res WHERE res.reserved)::integer AS lines_reserved,
       coalesce((SELECT short.sku FROM short), '')::text AS short_sku,
       coalesce((SELECT short.available FROM short), 0)::bigint AS short_available,
       NOT EXISTS (SELECT 1 FROM res JOIN lines l ON l.sku = res.sku
                   WHERE res.price_minor <> l.unit_price_minor OR res.currency <> sqlc.arg(currency)::text) AS prices_held
FROM o;

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
-- Walks orders_buyer_idx newest first, filtering the status on the way.
SELECT * FROM orders
WHERE buyer_id = sqlc.arg(buyer_id)
  AND (sqlc.narg(status)::order_status IS NULL OR status = sqlc.narg(status)::order_status)
  AND id < sqlc.arg(before_id)::bigint
ORDER BY id DESC
LIMIT sqlc.arg(lim);

-- name: ApplyTransition :one
-- Moves an order from one status to the next in one statement: the status
-- guard and the row lock of the UPDATE (a concurrent transition of the same
-- order either happened before — no row — or waits), the facts of the
-- transition, the history event, the feed event, and with move_stock the stock move the
-- transition implies (orders_move_stock: the order's products locked in
-- sku order after the order row, each counter moved by its coefficient ×
-- the line's quantity, failing unless every line moved).
--
-- Every commit of it is synchronous: an asynchronous commit of a job's
-- transition could be lost in a database crash while River's completion
-- (retried after the restart) survives, leaving e.g. an expired order
-- CONFIRMED for good with its expire job completed.
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
), ev AS (
    INSERT INTO order_event (order_id, from_status, to_status, actor, detail)
    SELECT o.id, sqlc.arg(from_status)::order_status, o.status, sqlc.arg(actor)::text, sqlc.narg(detail)::text FROM o
), feed AS (
    -- The transition's feed event (event_type '' when events are off:
    -- bench events only), as the stored row; see schema step 10.
    INSERT INTO event (type, subject_type, subject_id, data, data_kind)
    SELECT sqlc.arg(event_type)::text, 'order', o.id::text,
           order_feed_row(to_jsonb(o), o.id),
           'order_row'
    FROM o WHERE sqlc.arg(event_type)::text <> ''
)
SELECT o.id, o.buyer_id, o.merchant_id, o.identifier, o.request_hash, o.status, o.total_minor, o.currency,
       o.created_at, o.expires_at, o.updated_at, o.confirmed_at, o.paid_at, o.shipped_at, o.completed_at,
       o.cancelled_at, o.cancel_reason, o.payment_id, o.ledger_entry_id, o.tracking_no,
       (CASE WHEN sqlc.arg(move_stock)::boolean
             THEN orders_move_stock(o.id, sqlc.arg(d_on_hand)::bigint, sqlc.arg(d_reserved)::bigint, sqlc.arg(d_sold)::bigint)
             ELSE 0 END)::integer AS lines_moved
FROM o;

-- name: OrderStatus :one
-- An unlocked read for the jobs: a status that no longer needs them
-- (confirmed, paid, cancelled) never changes back, so they can stop here
-- without locking (or writing) anything.
SELECT status FROM orders WHERE id = $1;

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

-- name: ConfirmCreatedOrders :one
-- Confirms up to lim CREATED orders, oldest first, in one statement: claims
-- them with SKIP LOCKED (an order a payment, a cancel or another batch
-- holds is left to that transaction), moves each to CONFIRMED with its
-- history and feed events, and adds their stock moves (reserved becomes
-- sold), summed per product, to the products' rows in
-- product_stock_pending, in sku order: no product row is locked (schema
-- step 13; orders_fold_stock_moves folds them in later).
-- Returns how many orders were confirmed and how many products were to
-- move and moved; the caller fails unless those agree.
WITH claimed AS (
    SELECT c.id FROM orders c
    WHERE c.status = 'CREATED'
    ORDER BY c.created_at, c.id
    LIMIT sqlc.arg(lim)
    FOR NO KEY UPDATE SKIP LOCKED
), o AS (
    UPDATE orders SET
        status       = 'CONFIRMED',
        updated_at   = now(),
        confirmed_at = now()
    FROM claimed
    WHERE orders.id = claimed.id AND orders.status = 'CREATED'
    RETURNING orders.*
), ev AS (
    INSERT INTO order_event (order_id, from_status, to_status, actor)
    SELECT o.id, 'CREATED', 'CONFIRMED', sqlc.arg(actor)::text FROM o ORDER BY o.id
), feed AS (
    INSERT INTO event (type, subject_type, subject_id, data, data_kind)
    SELECT sqlc.arg(event_type)::text, 'order', o.id::text,
           order_feed_row(to_jsonb(o), o.id),
           'order_row'
    FROM o WHERE sqlc.arg(event_type)::text <> ''
    ORDER BY o.id
), moves AS (
    SELECT i.sku, sum(i.quantity)::bigint AS quantity
    FROM order_item i JOIN o ON o.id = i.order_id
    GROUP BY i.sku
), logged AS (
    INSERT INTO product_stock_pending AS p (sku, on_hand, reserved, sold)
    SELECT m.sku, -m.quantity, -m.quantity, m.quantity FROM moves m ORDER BY m.sku
    ON CONFLICT (sku) DO UPDATE
    SET on_hand  = p.on_hand + excluded.on_hand,
        reserved = p.reserved + excluded.reserved,
        sold     = p.sold + excluded.sold
    RETURNING 1
)
SELECT (SELECT count(*) FROM o)::integer AS orders_confirmed,
       (SELECT count(*) FROM moves)::integer AS products,
       (SELECT count(*) FROM logged)::integer AS products_moved;

-- name: ExpireDueOrders :one
-- Cancels up to lim unpaid orders (CREATED or CONFIRMED) whose expires_at
-- has passed, earliest deadline first, with reason, in one statement: the
-- claim reads orders_unpaid_expiry_idx with SKIP LOCKED (an order being
-- paid or cancelled is left to that transaction, which decides it), each
-- order gets its history and feed events, and the stock is released summed
-- per product: a CREATED order's reservation, a CONFIRMED order's sold
-- units back on hand. Products are updated last, in sku order.
WITH claimed AS (
    SELECT c.id, c.status FROM orders c
    WHERE c.status IN ('CREATED', 'CONFIRMED') AND c.expires_at <= now()
    ORDER BY c.expires_at, c.id
    LIMIT sqlc.arg(lim)
    FOR NO KEY UPDATE SKIP LOCKED
), o AS (
    UPDATE orders SET
        status        = 'CANCELLED',
        updated_at    = now(),
        cancelled_at  = now(),
        cancel_reason = sqlc.arg(reason)::text
    FROM claimed
    WHERE orders.id = claimed.id AND orders.status = claimed.status
    RETURNING orders.*
), ev AS (
    INSERT INTO order_event (order_id, from_status, to_status, actor, detail)
    SELECT o.id, c.status, 'CANCELLED', sqlc.arg(actor)::text, sqlc.arg(reason)::text
    FROM o JOIN claimed c ON c.id = o.id ORDER BY o.id
), feed AS (
    INSERT INTO event (type, subject_type, subject_id, data, data_kind)
    SELECT sqlc.arg(event_type)::text, 'order', o.id::text,
           order_feed_row(to_jsonb(o), o.id),
           'order_row'
    FROM o WHERE sqlc.arg(event_type)::text <> ''
    ORDER BY o.id
), moves AS (
    SELECT i.sku,
           sum(i.quantity) FILTER (WHERE c.status = 'CONFIRMED')::bigint AS returned,
           sum(i.quantity) FILTER (WHERE c.status = 'CREATED')::bigint AS released
    FROM order_item i JOIN o ON o.id = i.order_id JOIN claimed c ON c.id = o.id
    GROUP BY i.sku
)
SELECT (SELECT count(*) FROM o)::integer AS orders_expired,
       (SELECT count(*) FROM moves)::integer AS products,
       orders_move_stock_by_sku(
           ARRAY(SELECT m.sku FROM moves m),
           ARRAY(SELECT coalesce(m.returned, 0) FROM moves m),
           ARRAY(SELECT -coalesce(m.released, 0) FROM moves m),
           ARRAY(SELECT -coalesce(m.returned, 0) FROM moves m))::integer AS products_moved;

-- name: LockOrderConfirmRequests :exec
-- The lingering confirmer's final transaction: waits for every order that
-- asked for it (orders_request_confirm holds the lock shared to commit).
SELECT pg_advisory_xact_lock(1919251324, 0);

-- name: OrderConfirmSignalExists :one
SELECT EXISTS (SELECT 1 FROM order_confirm_signal);

-- name: DeleteOrderConfirmSignal :exec
DELETE FROM order_confirm_signal;

-- name: CreatedOrdersWaiting :one
-- Whether orders wait in CREATED, and whether one of them is free (not
-- locked by a payment or a cancel, whose transaction will decide it).
-- FOR SHARE conflicts with the FOR NO KEY UPDATE those take (FOR KEY SHARE
-- would not, and would call every held order free); the share lock on the
-- one free order found is held until the confirmer's final commit.
SELECT EXISTS (SELECT 1 FROM orders WHERE status = 'CREATED') AS any_waiting,
       EXISTS (SELECT 1 FROM (SELECT id FROM orders WHERE status = 'CREATED' LIMIT 1 FOR SHARE SKIP LOCKED) s) AS free_waiting;

-- name: LockOrderConfirmer :exec
-- The confirmer's lock: batches of ConfirmCreatedOrders run one at a time
-- (concurrent batches would contend for the same hot products and split
-- the waiting orders into small batches). Held until commit.
SELECT pg_advisory_xact_lock(1919251323, 0);
