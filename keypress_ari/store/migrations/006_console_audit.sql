-- The web console's audit trail: one row per change made from the console (who, what,
-- when, and what it changed), shown on its catalog page. Calls' operator actions are in
-- call_events (kind operator_action) like every other action.
CREATE TABLE console_audit (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    who text NOT NULL,
    what text NOT NULL,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX console_audit_at ON console_audit (at DESC);
