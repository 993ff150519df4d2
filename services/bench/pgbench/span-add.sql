-- One POST /v1/agl/spans of the store, statement by statement (tx.rs: load, then write).
\set r random(1, 32)
\set s random(1, 9000000000000000)
BEGIN;
SELECT doc, queue_pos FROM agl_rollouts WHERE rollout_id = ANY(ARRAY['ro-run-' || :r]) ORDER BY rollout_id FOR UPDATE;
SELECT doc FROM agl_attempts WHERE rollout_id = ANY(ARRAY['ro-run-' || :r]);
INSERT INTO agl_sequences (rollout_id, value) SELECT unnest(ARRAY['ro-run-' || :r]), 0 ON CONFLICT (rollout_id) DO NOTHING;
SELECT rollout_id, value FROM agl_sequences WHERE rollout_id = ANY(ARRAY['ro-run-' || :r]) ORDER BY rollout_id FOR UPDATE;
SELECT s.rollout_id, s.doc FROM agl_spans s JOIN unnest(ARRAY['ro-run-' || :r], ARRAY['at-run-' || :r], ARRAY[:s::text]) AS k(r, a, s) ON s.rollout_id = k.r AND s.attempt_id = k.a AND s.span_id = k.s ORDER BY s.id;
SELECT doc FROM agl_workers WHERE worker_id = ANY(ARRAY['w-' || :r]) ORDER BY worker_id FOR UPDATE;
INSERT INTO agl_attempts (rollout_id, sequence_id, start_time, alive_time, doc) SELECT * FROM unnest(ARRAY['ro-run-' || :r], ARRAY[1::int8], ARRAY[1.0::float8], ARRAY[2.0::float8], ARRAY[ '{"rollout_id":"ro-run-' || :r || '","attempt_id":"at-run-' || :r || '","sequence_id":1,"start_time":1.0,"end_time":null,"status":"running","worker_id":"w-' || :r || '","last_heartbeat_time":2.0,"metadata":null}']) ON CONFLICT (rollout_id, sequence_id) DO UPDATE SET doc = EXCLUDED.doc, start_time = EXCLUDED.start_time, alive_time = EXCLUDED.alive_time;
INSERT INTO agl_sequences (rollout_id, value) SELECT * FROM unnest(ARRAY['ro-run-' || :r], ARRAY[:s::int8]) ON CONFLICT (rollout_id) DO UPDATE SET value = GREATEST(agl_sequences.value, EXCLUDED.value);
INSERT INTO agl_spans (rollout_id, attempt_id, span_id, sequence_id, doc) SELECT * FROM unnest(ARRAY['ro-run-' || :r], ARRAY['at-run-' || :r], ARRAY[:s::text], ARRAY[:s::int8], ARRAY[repeat('x', 1000)]) ON CONFLICT (rollout_id, attempt_id, span_id) DO NOTHING;
INSERT INTO agl_counts (slot, spans, span_bytes) VALUES (pg_backend_pid(), 1, 1000) ON CONFLICT (slot) DO UPDATE SET spans = agl_counts.spans + EXCLUDED.spans, span_bytes = agl_counts.span_bytes + EXCLUDED.span_bytes;
COMMIT;
