-- The same keys, indexes, foreign keys and statistics `emrsim-migrate migrate` delivers, for the
-- peer routes of the benchmark (pgloader + SQL, DuckDB, Sling, the server-only floor), once their
-- rows are in schema typed. Included by pgloader_to_typed.sql; run by duckdb_route.py and
-- floor.py.

ALTER TABLE typed.users ADD PRIMARY KEY (id);
CREATE UNIQUE INDEX ON typed.users (email);
ALTER TABLE typed.patients ADD PRIMARY KEY (id);
ALTER TABLE typed.conversations ADD PRIMARY KEY (id);
CREATE INDEX ON typed.conversations (user_id);
CREATE INDEX ON typed.conversations (patient_id);
ALTER TABLE typed.messages ADD PRIMARY KEY (id, created_at);
CREATE INDEX ON typed.messages (conversation_id);
CREATE INDEX ON typed.messages (created_at);
CREATE INDEX ON typed.messages USING gin (metadata jsonb_path_ops);
ALTER TABLE typed.patient_records ADD PRIMARY KEY (id);
CREATE INDEX ON typed.patient_records (patient_id);
CREATE INDEX ON typed.patient_records USING gin (data jsonb_path_ops);
ALTER TABLE typed.user_sessions ADD PRIMARY KEY (token);
CREATE INDEX ON typed.user_sessions (user_id);
CREATE INDEX ON typed.user_sessions (expires_at);

ALTER TABLE typed.patients ADD FOREIGN KEY (created_by) REFERENCES typed.users (id) ON DELETE SET NULL;
ALTER TABLE typed.conversations ADD FOREIGN KEY (user_id) REFERENCES typed.users (id) ON DELETE CASCADE;
ALTER TABLE typed.conversations ADD FOREIGN KEY (patient_id) REFERENCES typed.patients (id);
ALTER TABLE typed.messages ADD FOREIGN KEY (conversation_id) REFERENCES typed.conversations (id) ON DELETE CASCADE;
ALTER TABLE typed.patient_records ADD FOREIGN KEY (patient_id) REFERENCES typed.patients (id) ON DELETE CASCADE;
ALTER TABLE typed.user_sessions ADD FOREIGN KEY (user_id) REFERENCES typed.users (id) ON DELETE CASCADE;

ANALYZE typed.users, typed.patients, typed.conversations, typed.messages, typed.patient_records,
    typed.user_sessions;
