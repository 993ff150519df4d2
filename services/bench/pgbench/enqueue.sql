-- One POST /v1/agl/queues/rollouts/enqueue of 10 rollouts, as the store sends it.
\set b random(1, 9000000000000000)
BEGIN;
SELECT value FROM agl_meta WHERE key = 'latest_resources';
INSERT INTO agl_rollouts (rollout_id, status, doc, timeout_s, unresponsive_s) SELECT 'ro-e-' || :b || '-' || i, 'queuing', '{"rollout_id":"ro-e-' || :b || '-' || i || '","input":{"question":"' || repeat('q', 200) || '","db":"hr.sqlite"},"start_time":1.0,"end_time":null,"mode":"train","resources_id":null,"status":"queuing","config":{"timeout_seconds":null,"unresponsive_seconds":null,"max_attempts":1,"retry_condition":[]},"metadata":{}}', NULL::float8, NULL::float8 FROM generate_series(1, 10) i;
UPDATE agl_rollouts r SET queue_pos = v.pos FROM (SELECT id, nextval('agl_queue_pos') AS pos FROM (SELECT 'ro-e-' || :b || '-' || i AS id FROM generate_series(1, 10) i ORDER BY i) AS o) AS v WHERE r.rollout_id = v.id AND r.queue_pos IS NULL;
INSERT INTO agl_counts (slot, r0) VALUES (pg_backend_pid(), 10) ON CONFLICT (slot) DO UPDATE SET r0 = agl_counts.r0 + EXCLUDED.r0;
COMMIT;
