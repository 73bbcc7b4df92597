-- The webhook outbox: one row per webhook a flow fired, written by the call log writer in the
-- same transaction as the key press that fired it, so a crash cannot lose it. The webhook
-- worker (keypress_ari/webhooks/worker.py) sends due pending rows and records every attempt
-- as a call_events row (kind 'webhook_attempt', seq NULL).
--
-- body holds the exact bytes that are signed and sent (UTF-8 text; '' for no body).
-- While a worker is sending a row it pushes next_attempt_at forward (a lease), so other
-- workers skip it; a worker that dies mid-send leaves the row to be retried after the lease.
CREATE TABLE webhook_outbox (
    id              bigserial PRIMARY KEY,
    call_id         uuid NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    flow            text,                              -- "group/label" of the flow that fired
    url             text NOT NULL CHECK (url ~ '^https?://'),
    method          text NOT NULL CHECK (method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')),
    headers         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(headers) = 'object'),
    body            text NOT NULL DEFAULT '',
    idempotency_key uuid NOT NULL UNIQUE,              -- sent as Idempotency-Key on every try
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    CONSTRAINT webhook_outbox_delivered_at CHECK ((status = 'delivered') = (delivered_at IS NOT NULL))
);
-- What the worker polls: pending rows by due time.
CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX webhook_outbox_call_idx ON webhook_outbox (call_id);
