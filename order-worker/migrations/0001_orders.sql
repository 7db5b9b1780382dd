-- The order database's first schema, the same SQL on PostgreSQL and SQLite.
--
-- item_stock holds each item's stock and how much is sold, with CHECK
-- constraints: the database itself refuses to oversell, whatever happened
-- to Redis. orders has the order id as primary key (redelivered messages
-- are no-ops) and a unique index on (item, user) over orders that are not
-- cancelled: one live order per user per item, and a user whose unpaid
-- order was cancelled may buy again.
--
-- IF NOT EXISTS throughout: databases created before migrations were
-- recorded by sqlx already hold these tables.

CREATE TABLE IF NOT EXISTS item_stock (
    item TEXT PRIMARY KEY,
    initial_stock BIGINT NOT NULL CHECK (initial_stock >= 0),
    sold BIGINT NOT NULL DEFAULT 0 CHECK (sold >= 0),
    CHECK (sold <= initial_stock)
);

CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    item TEXT NOT NULL REFERENCES item_stock (item),
    user_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('created', 'paid', 'cancelled')),
    created_at_ms BIGINT NOT NULL,
    written_at_ms BIGINT NOT NULL,
    paid_at_ms BIGINT,
    cancelled_at_ms BIGINT
);

CREATE UNIQUE INDEX IF NOT EXISTS orders_one_live_per_user
    ON orders (item, user_id) WHERE status <> 'cancelled';

CREATE INDEX IF NOT EXISTS orders_by_user ON orders (user_id);

CREATE INDEX IF NOT EXISTS orders_by_written ON orders (item, written_at_ms);
