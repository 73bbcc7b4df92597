-- What a keypress-ari 0.1.0 database held (schema: migrations 001-004, the first release):
-- a catalog, three calls with their call log (one of them still open), a blocked caller,
-- webhooks delivered, pending and dead. tests/test_upgrades.py loads it into a database
-- migrated to 004, upgrades it to the latest schema and checks that nothing was lost.
INSERT INTO flow_groups (id, name, redirect_no_key_press, max_attempts, pass_through_digits)
VALUES (1, 'press-one', true, 3, false), (2, 'agent-keys', false, 2, false);

INSERT INTO flows (flow_group_id, position, name, key, filters, extra_tokens, disposition,
                   call_control_actions, continue_routing, buyer_conference_time_limit, actions)
VALUES
 (1, 0, 'vip', '1', '[{"token": "caller_state", "op": "==", "value": "CA"}]',
  '{"tier": "vip"}', NULL, '[]', true, NULL, '[]'),
 (1, 1, 'connect', '1', '[]', '{}', NULL, '[]', true, NULL, '[]'),
 (1, 2, 'nothing', 'no_key_press', '[]', '{}', 'no_press', '[]', false, NULL, '[]'),
 (2, 0, 'sale', '5', '[]', '{"sale": "yes"}', 'sale', '[]', false, 600,
  '[{"webhook": {"url": "http://127.0.0.1:9/hook", "method": "POST", "headers": {},
                 "body": "{\"call\": \"{call_id}\"}"}}]'),
 (2, 1, 'mute', '7', '[]', '{}', NULL, '["mute_consumer"]', false, NULL, '[]');

INSERT INTO routers (id, name, request_key_press, prompt, press_1_timeout, flow_group_id)
VALUES (1, 'main', true, 'sound:press-1', 4.5, 1);
INSERT INTO buyers (id, name, endpoint, ring_timeout, max_concurrency,
                    forwards_to_external_agent, flow_group_id)
VALUES (1, 'acme', 'PJSIP/acme', 15, 2, true, 2), (2, 'backup', 'Local/backup@buyers', 20, NULL,
        false, NULL);
INSERT INTO router_buyers (router_id, buyer_id, position) VALUES (1, 1, 0), (1, 2, 1);
INSERT INTO numbers (number, router_id, keypress_controls, flow_group_id)
VALUES ('+18005550100', 1, false, NULL), ('18005550101', 1, true, 2);
UPDATE catalog_state SET version = 7;
SELECT setval(pg_get_serial_sequence('flow_groups', 'id'), 2);
SELECT setval(pg_get_serial_sequence('routers', 'id'), 1);
SELECT setval(pg_get_serial_sequence('buyers', 'id'), 2);

INSERT INTO calls (id, number, caller_number, router, channel_id, legs, tokens, disposition,
                   stage, state, started_at, ended_at, ended_by, end_reason)
VALUES
 ('11111111-1111-4111-8111-111111111111', '+18005550100', '+15105550001', 'main', 'ch-1',
  '{"caller": "ch-1", "buyer": "ch-1b"}', '{"tier": "vip", "sale": "yes"}', 'sale',
  'ended', '{}', '2026-11-20 10:00:00+00', '2026-11-20 10:04:00+00', 'buyer', 'disposition'),
 ('22222222-2222-4222-8222-222222222222', '+18005550100', '+15105550002', 'main', 'ch-2',
  '{"caller": "ch-2"}', '{}', 'no_press', 'ended', '{}',
  '2026-11-20 11:00:00+00', '2026-11-20 11:00:20+00', 'daemon', 'disposition'),
 ('33333333-3333-4333-8333-333333333333', '18005550101', '+15105550003', 'main', 'ch-3',
  '{"caller": "ch-3"}', '{}', NULL, 'key_press', '{}',
  '2026-11-20 12:00:00+00', NULL, NULL, NULL);

INSERT INTO call_events (call_id, seq, at, leg, kind, digit, flow, detail) VALUES
 ('11111111-1111-4111-8111-111111111111', 1, '2026-11-20 10:00:00+00', 'caller',
  'call_started', NULL, NULL, '{"number": "+18005550100"}'),
 ('11111111-1111-4111-8111-111111111111', 2, '2026-11-20 10:00:03+00', 'caller',
  'key_press', '1', 'press-one/vip', '{"matched": true}'),
 ('11111111-1111-4111-8111-111111111111', 3, '2026-11-20 10:00:03+00', 'caller',
  'tokens_set', NULL, 'press-one/vip', '{"tokens": {"tier": "vip"}}'),
 ('11111111-1111-4111-8111-111111111111', 4, '2026-11-20 10:00:04+00', 'buyer',
  'buyer_answered', NULL, NULL, '{"buyer": "acme"}'),
 ('11111111-1111-4111-8111-111111111111', 5, '2026-11-20 10:03:59+00', 'buyer',
  'key_press', '5', 'agent-keys/sale', '{"matched": true}'),
 ('11111111-1111-4111-8111-111111111111', 6, '2026-11-20 10:03:59+00', 'buyer',
  'webhook_queued', NULL, 'agent-keys/sale', '{"url": "http://127.0.0.1:9/hook"}'),
 ('11111111-1111-4111-8111-111111111111', 7, '2026-11-20 10:04:00+00', 'buyer',
  'disposition', NULL, 'agent-keys/sale', '{"disposition": "sale"}'),
 ('11111111-1111-4111-8111-111111111111', 8, '2026-11-20 10:04:00+00', NULL,
  'call_ended', NULL, NULL, '{"ended_by": "buyer"}'),
 ('11111111-1111-4111-8111-111111111111', NULL, '2026-11-20 10:04:01+00', NULL,
  'webhook_attempt', NULL, 'agent-keys/sale', '{"status": 200, "attempt": 1}'),
 ('22222222-2222-4222-8222-222222222222', 1, '2026-11-20 11:00:00+00', 'caller',
  'call_started', NULL, NULL, '{}'),
 ('22222222-2222-4222-8222-222222222222', 2, '2026-11-20 11:00:09+00', 'caller',
  'key_press', '9', NULL, '{"matched": false}'),
 ('22222222-2222-4222-8222-222222222222', 3, '2026-11-20 11:00:19+00', 'caller',
  'no_key_press', NULL, 'press-one/nothing', '{}'),
 ('22222222-2222-4222-8222-222222222222', 4, '2026-11-20 11:00:20+00', NULL,
  'call_ended', NULL, NULL, '{"ended_by": "daemon"}'),
 ('33333333-3333-4333-8333-333333333333', 1, '2026-11-20 12:00:00+00', 'caller',
  'call_started', NULL, NULL, '{}'),
 ('33333333-3333-4333-8333-333333333333', 2, '2026-11-20 12:00:02+00', 'caller',
  'prompt_started', NULL, NULL, '{"media": "sound:press-1"}');

INSERT INTO blocklist (caller_number, reason, call_id)
VALUES ('+15105559999', 'pressed 9 on a spam flow', '22222222-2222-4222-8222-222222222222');

INSERT INTO webhook_outbox (call_id, flow, url, method, headers, body, idempotency_key,
                            status, attempts, next_attempt_at, last_error, delivered_at)
VALUES
 ('11111111-1111-4111-8111-111111111111', 'agent-keys/sale', 'http://127.0.0.1:9/hook',
  'POST', '{}', '{"call": "1111"}', 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', 'delivered', 1,
  '2026-11-20 10:04:01+00', NULL, '2026-11-20 10:04:01+00'),
 ('11111111-1111-4111-8111-111111111111', 'agent-keys/sale', 'http://127.0.0.1:9/hook',
  'POST', '{"X-Source": "keypress"}', '', 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', 'pending',
  2, '2026-11-20 10:10:00+00', 'timeout after 5.0 s', NULL),
 ('22222222-2222-4222-8222-222222222222', 'press-one/nothing', 'https://example.invalid/h',
  'GET', '{}', '', 'cccccccc-cccc-4ccc-8ccc-cccccccccccc', 'dead', 8,
  '2026-11-20 12:00:00+00', 'HTTP 500', NULL);
