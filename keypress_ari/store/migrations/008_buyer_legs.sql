-- Buyer legs live across every daemon sharing this database: one row per buyer leg a daemon
-- dialled and still holds, so a buyer's max_concurrency counts the legs of all daemons.
-- A row counts while expires_at is in the future; the owning daemon renews its rows (a
-- lease), so the legs of a daemon that died stop counting once its lease runs out.
-- Written by keypress_ari.store.buyer_legs.
CREATE TABLE buyer_legs (
    leg_id     text PRIMARY KEY,               -- the leg's channel id (kp-<hex>)
    buyer      text NOT NULL,
    daemon_id  text NOT NULL,                  -- the daemon that holds the leg
    reserved_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX buyer_legs_buyer_idx ON buyer_legs (buyer, expires_at);
CREATE INDEX buyer_legs_daemon_idx ON buyer_legs (daemon_id);

-- Reserve a leg of p_buyer if fewer than p_limit live legs of it exist (across daemons).
-- Returns how many live legs the buyer had besides this one: the leg was reserved when that
-- is below p_limit. The per-buyer advisory lock (held to the end of the transaction: the
-- caller's statement, in autocommit) makes concurrent reservations of one buyer take turns;
-- each statement below reads a fresh snapshot, so the count sees every committed reservation.
-- Reserving a leg_id already present only renews it (a retried call is harmless).
CREATE FUNCTION reserve_buyer_leg(p_buyer text, p_leg text, p_daemon text, p_limit integer,
                                  p_lease_seconds double precision)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    live integer;
BEGIN
    PERFORM pg_advisory_xact_lock(1801612403, hashtext(p_buyer));  -- 1801612403 = 'kbls'
    DELETE FROM buyer_legs WHERE buyer = p_buyer AND expires_at <= now();
    SELECT count(*) INTO live FROM buyer_legs WHERE buyer = p_buyer AND leg_id <> p_leg;
    IF live < p_limit THEN
        INSERT INTO buyer_legs (leg_id, buyer, daemon_id, expires_at)
        VALUES (p_leg, p_buyer, p_daemon, now() + make_interval(secs => p_lease_seconds))
        ON CONFLICT (leg_id) DO UPDATE
            SET buyer = EXCLUDED.buyer, daemon_id = EXCLUDED.daemon_id,
                expires_at = EXCLUDED.expires_at;
    END IF;
    RETURN live;
END
$$;
