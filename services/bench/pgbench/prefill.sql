-- 32 running rollouts (one per pgbench client) with an attempt and a worker each, and a
-- queue of 400 000 rollouts for the dequeue script to claim.
INSERT INTO agl_rollouts (rollout_id, status, doc)
SELECT 'ro-run-' || i, 'running',
       '{"rollout_id":"ro-run-' || i || '","input":{"question":"' || repeat('q', 200) || '","db":"hr.sqlite"},"start_time":1.0,"end_time":null,"mode":"train","resources_id":null,"status":"running","config":{"timeout_seconds":null,"unresponsive_seconds":null,"max_attempts":1,"retry_condition":[]},"metadata":{}}'
FROM generate_series(1, 32) i;
INSERT INTO agl_attempts (rollout_id, sequence_id, start_time, alive_time, doc)
SELECT 'ro-run-' || i, 1, 1.0, 1.0,
       '{"rollout_id":"ro-run-' || i || '","attempt_id":"at-run-' || i || '","sequence_id":1,"start_time":1.0,"end_time":null,"status":"running","worker_id":"w-' || i || '","last_heartbeat_time":1.0,"metadata":null}'
FROM generate_series(1, 32) i;
INSERT INTO agl_workers (worker_id, doc)
SELECT 'w-' || i, '{"worker_id":"w-' || i || '","status":"busy","heartbeat_stats":null,"last_heartbeat_time":1.0,"last_dequeue_time":1.0,"last_busy_time":1.0,"last_idle_time":null,"current_rollout_id":"ro-run-' || i || '","current_attempt_id":"at-run-' || i || '"}'
FROM generate_series(1, 32) i;
INSERT INTO agl_rollouts (rollout_id, status, queue_pos, doc)
SELECT 'ro-q-' || i, 'queuing', nextval('agl_queue_pos'),
       '{"rollout_id":"ro-q-' || i || '","input":{"question":"' || repeat('q', 200) || '","db":"hr.sqlite"},"start_time":1.0,"end_time":null,"mode":"train","resources_id":null,"status":"queuing","config":{"timeout_seconds":null,"unresponsive_seconds":null,"max_attempts":1,"retry_condition":[]},"metadata":{}}'
FROM generate_series(1, 400000) i;
VACUUM ANALYZE;
