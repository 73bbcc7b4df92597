-- Several daemons on one PostgreSQL: each daemon holds a lease it renews (daemons), and each
-- open call names the daemon that carries it (calls.state->>'owner'). A peer on the same
-- Asterisk takes over the calls of a daemon whose lease ran out (store/leases.py).
CREATE TABLE daemons (
    name          text PRIMARY KEY,             -- [cluster] name: app@asterisk by default
    app           text NOT NULL,                -- its Stasis app
    ari_url       text NOT NULL,                -- its Asterisk: only peers there take over
    epoch         bigint NOT NULL DEFAULT 1,    -- bumped at each start and each take-over
    lease_until   timestamptz NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    host          text NOT NULL DEFAULT '',
    pid           integer,
    taken_over_by text,                         -- the peer that took its calls, and when
    taken_over_at timestamptz
);
CREATE INDEX calls_open_owner_idx ON calls ((state->>'owner')) WHERE ended_at IS NULL;
