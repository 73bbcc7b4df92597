-- Callers blocked by a flow's block_caller action (or by an operator): calls from these
-- numbers are rejected at entry, with a call log row saying so.
CREATE TABLE blocklist (
    caller_number text PRIMARY KEY CHECK (caller_number <> ''),
    reason        text NOT NULL DEFAULT '',
    call_id       uuid,                -- the call whose key press blocked it, if any
    created_at    timestamptz NOT NULL DEFAULT now()
);
