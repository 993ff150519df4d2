-- POST …/queues/rollouts/dequeue (limit 1, a worker) and then POST …/attempts/{id}
-- (succeeded), statement by statement as the store sends them.
\set w random(1, 32)
BEGIN;
SELECT rollout_id AS rid FROM agl_rollouts WHERE queue_pos IS NOT NULL ORDER BY queue_pos LIMIT 1 FOR UPDATE SKIP LOCKED \gset
SELECT doc FROM agl_attempts WHERE rollout_id = ANY(ARRAY[':rid']);
SELECT doc FROM agl_workers WHERE worker_id = ANY(ARRAY['w-' || :w]) ORDER BY worker_id FOR UPDATE;
UPDATE agl_rollouts r SET status = v.status, doc = v.doc, timeout_s = v.t, unresponsive_s = v.u FROM unnest(ARRAY[':rid'], ARRAY['preparing'], ARRAY['{"rollout_id":"' || ':rid' || '","input":{"question":"' || repeat('q', 200) || '"},"status":"preparing"}'], ARRAY[NULL::float8], ARRAY[NULL::float8]) AS v(id, status, doc, t, u) WHERE r.rollout_id = v.id;
INSERT INTO agl_attempts (rollout_id, sequence_id, start_time, alive_time, doc) VALUES (':rid', 1, 1.0, 1.0, '{"rollout_id":"' || ':rid' || '","attempt_id":"at-x","sequence_id":1,"status":"preparing","worker_id":"w-' || :w || '"}') ON CONFLICT (rollout_id, sequence_id) DO UPDATE SET doc = EXCLUDED.doc, start_time = EXCLUDED.start_time, alive_time = EXCLUDED.alive_time;
INSERT INTO agl_workers (worker_id, doc) VALUES ('w-' || :w, '{"worker_id":"w-' || :w || '","status":"busy","current_rollout_id":"' || ':rid' || '"}') ON CONFLICT (worker_id) DO UPDATE SET doc = EXCLUDED.doc;
UPDATE agl_rollouts SET queue_pos = NULL WHERE rollout_id = ANY(ARRAY[':rid']);
INSERT INTO agl_counts (slot, r0, r1, a0) VALUES (pg_backend_pid(), -1, 1, 1) ON CONFLICT (slot) DO UPDATE SET r0 = agl_counts.r0 + EXCLUDED.r0, r1 = agl_counts.r1 + EXCLUDED.r1, a0 = agl_counts.a0 + EXCLUDED.a0;
COMMIT;
BEGIN;
SELECT doc, queue_pos FROM agl_rollouts WHERE rollout_id = ANY(ARRAY[':rid']) ORDER BY rollout_id FOR UPDATE;
SELECT doc FROM agl_attempts WHERE rollout_id = ANY(ARRAY[':rid']);
SELECT doc FROM agl_workers WHERE worker_id = ANY(ARRAY['w-' || :w]) ORDER BY worker_id FOR UPDATE;
UPDATE agl_rollouts r SET status = v.status, doc = v.doc, timeout_s = v.t, unresponsive_s = v.u FROM unnest(ARRAY[':rid'], ARRAY['succeeded'], ARRAY['{"rollout_id":"' || ':rid' || '","input":{"question":"' || repeat('q', 200) || '"},"status":"succeeded"}'], ARRAY[NULL::float8], ARRAY[NULL::float8]) AS v(id, status, doc, t, u) WHERE r.rollout_id = v.id;
INSERT INTO agl_attempts (rollout_id, sequence_id, start_time, alive_time, doc) VALUES (':rid', 1, 1.0, 1.0, '{"rollout_id":"' || ':rid' || '","attempt_id":"at-x","sequence_id":1,"status":"succeeded","worker_id":"w-' || :w || '"}') ON CONFLICT (rollout_id, sequence_id) DO UPDATE SET doc = EXCLUDED.doc, start_time = EXCLUDED.start_time, alive_time = EXCLUDED.alive_time;
INSERT INTO agl_workers (worker_id, doc) VALUES ('w-' || :w, '{"worker_id":"w-' || :w || '","status":"idle"}') ON CONFLICT (worker_id) DO UPDATE SET doc = EXCLUDED.doc;
INSERT INTO agl_counts (slot, r1, r3, a0, a2) VALUES (pg_backend_pid(), -1, 1, -1, 1) ON CONFLICT (slot) DO UPDATE SET r1 = agl_counts.r1 + EXCLUDED.r1, r3 = agl_counts.r3 + EXCLUDED.r3, a0 = agl_counts.a0 + EXCLUDED.a0, a2 = agl_counts.a2 + EXCLUDED.a2;
SELECT pg_notify('agl_rollout_done', ':rid');
COMMIT;
