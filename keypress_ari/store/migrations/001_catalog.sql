-- The flow catalog: flow groups and their flows, routers, buyers, numbers.
-- Written by keypress_ari.store.catalog.import_catalog, read by load_catalog. The checks mirror
-- the pydantic models (keypress_ari/flows/model.py, syntax.py) so that rows written by hand
-- cannot hold what the daemon would refuse to load.
-- Applied by the migration runner inside a transaction: no BEGIN/COMMIT here.

CREATE TABLE flow_groups (
    id                    bigserial PRIMARY KEY,
    name                  text NOT NULL UNIQUE
                          CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    redirect_no_key_press boolean NOT NULL DEFAULT true,
    max_attempts          integer NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 20),
    pass_through_digits   boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- Flows of a group, matched in position order. filters: [{"token", "op", "value"?}, ...];
-- extra_tokens: {"name": "value"}; call_control_actions: the YAML form, e.g.
-- ["mute_consumer", {"play": {"media": "sound:beep", "to": "buyer"}}]; actions: webhooks,
-- [{"webhook": {"url", "method", "headers", "body"}}] (keypress_ari/flows/actions.py).
CREATE TABLE flows (
    id                          bigserial PRIMARY KEY,
    flow_group_id               bigint NOT NULL REFERENCES flow_groups (id) ON DELETE CASCADE,
    position                    integer NOT NULL CHECK (position >= 0),
    name                        text CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    key                         text NOT NULL CHECK (key ~ '^([0-9*#]|no_key_press)$'),
    filters                     jsonb NOT NULL DEFAULT '[]'
                                CHECK (jsonb_typeof(filters) = 'array'),
    extra_tokens                jsonb NOT NULL DEFAULT '{}'
                                CHECK (jsonb_typeof(extra_tokens) = 'object'),
    disposition                 text CHECK (disposition ~ '^[a-z][a-z0-9_]{0,63}$'),
    call_control_actions        jsonb NOT NULL DEFAULT '[]'
                                CHECK (jsonb_typeof(call_control_actions) = 'array'),
    continue_routing            boolean NOT NULL DEFAULT false,
    buyer_conference_time_limit integer CHECK (buyer_conference_time_limit > 0),
    actions                     jsonb NOT NULL DEFAULT '[]'
                                CHECK (jsonb_typeof(actions) = 'array'),
    UNIQUE (flow_group_id, position),
    UNIQUE (flow_group_id, name),
    CONSTRAINT flows_continue_routing_exclusive CHECK (
        NOT continue_routing
        OR (disposition IS NULL AND jsonb_array_length(call_control_actions) = 0)
    ),
    CONSTRAINT flows_does_something CHECK (
        continue_routing
        OR disposition IS NOT NULL
        OR jsonb_array_length(call_control_actions) > 0
        OR extra_tokens <> '{}'::jsonb
        OR jsonb_array_length(actions) > 0
    )
);

CREATE TABLE routers (
    id                bigserial PRIMARY KEY,
    name              text NOT NULL UNIQUE
                      CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    request_key_press boolean NOT NULL DEFAULT true,
    prompt            text,
    press_1_timeout   numeric NOT NULL DEFAULT 5
                      CHECK (press_1_timeout > 0 AND press_1_timeout <= 300),
    no_buyer_prompt   text,            -- played before hanging up when no buyer is left
    flow_group_id     bigint REFERENCES flow_groups (id) ON DELETE RESTRICT,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT routers_key_press_needs_group
        CHECK (NOT request_key_press OR flow_group_id IS NOT NULL)
);

CREATE TABLE buyers (
    id                         bigserial PRIMARY KEY,
    name                       text NOT NULL UNIQUE
                               CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    endpoint                   text NOT NULL CHECK (endpoint ~ '^[A-Za-z][A-Za-z0-9_-]*/\S+$'),
    ring_timeout               integer NOT NULL DEFAULT 20 CHECK (ring_timeout BETWEEN 1 AND 600),
    enabled                    boolean NOT NULL DEFAULT true,
    max_concurrency            integer CHECK (max_concurrency >= 1),
    forwards_to_external_agent boolean NOT NULL DEFAULT false,
    flow_group_id              bigint REFERENCES flow_groups (id) ON DELETE RESTRICT,
    created_at                 timestamptz NOT NULL DEFAULT now(),
    updated_at                 timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT buyers_agent_needs_group
        CHECK (NOT forwards_to_external_agent OR flow_group_id IS NOT NULL)
);

-- The buyers a router offers the call to, in order.
CREATE TABLE router_buyers (
    router_id bigint NOT NULL REFERENCES routers (id) ON DELETE CASCADE,
    buyer_id  bigint NOT NULL REFERENCES buyers (id) ON DELETE RESTRICT,
    position  integer NOT NULL CHECK (position >= 0),
    PRIMARY KEY (router_id, position),
    UNIQUE (router_id, buyer_id)
);
CREATE INDEX router_buyers_buyer_idx ON router_buyers (buyer_id);

CREATE TABLE numbers (
    id                bigserial PRIMARY KEY,
    number            text NOT NULL UNIQUE CHECK (number ~ '^\+?[0-9]{1,20}$'),
    router_id         bigint NOT NULL REFERENCES routers (id) ON DELETE RESTRICT,
    keypress_controls boolean NOT NULL DEFAULT false,
    flow_group_id     bigint REFERENCES flow_groups (id) ON DELETE RESTRICT,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT numbers_controls_need_group
        CHECK (NOT keypress_controls OR flow_group_id IS NOT NULL)
);
CREATE INDEX numbers_router_idx ON numbers (router_id);

-- One row: the catalog version, bumped by every import, which then runs
-- pg_notify('keypress_catalog', version::text) so daemons reload. The import upserts the row,
-- so it also copes with the table having been emptied.
CREATE TABLE catalog_state (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    version    bigint NOT NULL DEFAULT 0 CHECK (version >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO catalog_state (id, version) VALUES (true, 0);
