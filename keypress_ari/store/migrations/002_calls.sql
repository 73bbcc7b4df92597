-- Calls and the call log.
-- A call row is opened when a channel enters the Stasis app and closed when the call ends.
-- Names (number, router) are copied as they were at call time: the catalog may change later.
CREATE TABLE calls (
    id            uuid PRIMARY KEY,
    number        text NOT NULL,                    -- the dialled (tracking) number
    caller_number text NOT NULL DEFAULT '',
    router        text,
    channel_id    text NOT NULL,                    -- the caller's leg
    legs          jsonb NOT NULL DEFAULT '{}',      -- leg name -> channel id, every leg the call had
    tokens        jsonb NOT NULL DEFAULT '{}',
    disposition   text,
    stage         text NOT NULL,
    state         jsonb NOT NULL DEFAULT '{}',      -- persisted per-call state, for adoption after a restart
    started_at    timestamptz NOT NULL,
    ended_at      timestamptz,
    ended_by      text,
    end_reason    text
);
CREATE INDEX calls_started_at_idx ON calls (started_at);
CREATE INDEX calls_number_started_idx ON calls (number, started_at);
CREATE INDEX calls_disposition_idx ON calls (disposition) WHERE disposition IS NOT NULL;
CREATE INDEX calls_open_idx ON calls (channel_id) WHERE ended_at IS NULL;

-- The call log: one row per key press and per action it triggered, in order per call.
-- Rows the call itself writes carry its sequence number (seq); (call_id, seq) is unique so
-- a row written twice (a retried batch) is stored once. Rows written outside the call's
-- own order (webhook delivery attempts) have no seq and are ordered by time.
CREATE TABLE call_events (
    id      bigserial PRIMARY KEY,
    call_id uuid NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq     integer,
    at      timestamptz NOT NULL,
    leg     text,
    kind    text NOT NULL,
    digit   text CHECK (digit IS NULL OR digit ~ '^[0-9*#A-D]$'),
    flow    text,
    detail  jsonb NOT NULL DEFAULT '{}',
    UNIQUE (call_id, seq)
);
CREATE INDEX call_events_kind_idx ON call_events (kind, at);
CREATE INDEX call_events_call_at_idx ON call_events (call_id, at);
