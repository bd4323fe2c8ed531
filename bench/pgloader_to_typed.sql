-- What a pgloader user still has to do to reach the schema `emrsim-migrate migrate` delivers:
-- pgloader leaves bigint ids, text timestamps, text JSON and 0/1 integers in schema public.
-- This converts them, in SQL, into schema typed: the same uuids (the plan's legacy_id format),
-- timestamptz, jsonb, boolean, date and varchar(n), messages partitioned by month, the plan's
-- primary keys, indexes (GIN on jsonb included) and foreign keys, then ANALYZE.
-- psql -v ON_ERROR_STOP=1 -v users=<prefix> -v patients=<prefix> ... -f pgloader_to_typed.sql
-- (each prefix: the 17 hex digits that emrsim_assets.convert.uuid_prefix gives the table).

CREATE SCHEMA typed;

CREATE FUNCTION typed.legacy_uuid(prefix text, id bigint) RETURNS uuid
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT (prefix || lpad(id::text, 15, '0'))::uuid $$;

CREATE FUNCTION typed.utc(value text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT value::timestamp AT TIME ZONE 'UTC' $$;

CREATE TABLE typed.users AS
SELECT typed.legacy_uuid(:'users', id) AS id, email::varchar(255) AS email,
       name::varchar(255) AS name, password_hash::varchar(255) AS password_hash,
       role::varchar(50) AS role, is_active <> 0 AS is_active,
       typed.utc(created_at) AS created_at, typed.utc(updated_at) AS updated_at
FROM public.users;

CREATE TABLE typed.patients AS
SELECT typed.legacy_uuid(:'patients', id) AS id, name::varchar(255) AS name,
       date_of_birth::date AS date_of_birth, sex::varchar(20) AS sex, scenario,
       typed.legacy_uuid(:'users', created_by) AS created_by, typed.utc(created_at) AS created_at
FROM public.patients;

CREATE TABLE typed.conversations AS
SELECT typed.legacy_uuid(:'conversations', id) AS id, title::varchar(255) AS title,
       typed.legacy_uuid(:'users', user_id) AS user_id,
       typed.legacy_uuid(:'patients', patient_id) AS patient_id, status::varchar(50) AS status,
       typed.utc(created_at) AS created_at, typed.utc(updated_at) AS updated_at
FROM public.conversations;

CREATE TABLE typed.patient_records AS
SELECT typed.legacy_uuid(:'patient_records', id) AS id,
       typed.legacy_uuid(:'patients', patient_id) AS patient_id,
       record_type::varchar(50) AS record_type, data::jsonb AS data, is_abnormal <> 0 AS is_abnormal,
       typed.utc(recorded_at) AS recorded_at, typed.utc(created_at) AS created_at
FROM public.patient_records;

CREATE TABLE typed.user_sessions AS
SELECT token::varchar(128) AS token, typed.legacy_uuid(:'users', user_id) AS user_id,
       data::jsonb AS data, to_timestamp(expires_at / 1000.0) AS expires_at,
       is_revoked <> 0 AS is_revoked, typed.utc(created_at) AS created_at
FROM public.user_sessions;

CREATE TABLE typed.messages (
    id uuid NOT NULL,
    conversation_id uuid NOT NULL,
    sender varchar(50) NOT NULL,
    message text NOT NULL,
    metadata jsonb,
    created_at timestamptz NOT NULL
) PARTITION BY RANGE (created_at);

DO $$
DECLARE
    month timestamptz;
BEGIN
    FOR month IN
        SELECT generate_series(date_trunc('month', min(typed.utc(created_at)), 'UTC'),
                               max(typed.utc(created_at)), interval '1 month')
        FROM public.messages
    LOOP
        EXECUTE format('CREATE TABLE typed.%I PARTITION OF typed.messages FOR VALUES FROM (%L) TO (%L)',
                       'messages_y' || to_char(month AT TIME ZONE 'UTC', 'YYYY"m"MM'),
                       month, month + interval '1 month');
    END LOOP;
END $$;

INSERT INTO typed.messages
SELECT typed.legacy_uuid(:'messages', id), typed.legacy_uuid(:'conversations', conversation_id),
       sender, message, metadata::jsonb, typed.utc(created_at)
FROM public.messages;

\ir typed_keys.sql
