-- The ingest-hardening tables and functions (0080, 0081) under the per-stage roles and session
-- tokens of 0100 and 0101, which came after them.

-- Ingest: the landing zone's ignored entries, retried quarantined rows, re-ingested windows of a
-- corrected reading, and the corrections it applies.
grant select, insert, update, delete on raw.landing_ignored to emps_ingest;
grant update on raw.quarantined_rows to emps_ingest;
grant update (ingested_at) on raw.sensor_readings to emps_ingest;
grant select, update on ops.reading_corrections to emps_ingest;
grant select on ops.predictions to emps_ingest;
-- Scoring: the predictions a correction superseded keep a note.
grant update (note) on ops.predictions to emps_scoring;
-- Alerting: the operations alerts (check-critical-alerts evaluates their rules).
grant select, insert, update, delete on ops.operations_alerts to emps_alerting;
grant usage, select on sequence ops.operations_alerts_id_seq to emps_alerting;
grant select on raw.ingest_files, raw.quarantined_rows, raw.landing_ignored to emps_alerting;
grant select on raw.landing_ignored, ops.reading_corrections, ops.operations_alerts to emps_reader;

-- The admin's review of quarantined rows takes a session token, like every other dashboard
-- function: the user and their role come from the session, never from an argument.
alter function ops.admin_accept_conflict(text, bigint, text) rename to accept_conflict_as;
alter function ops.admin_dismiss_conflict(text, bigint, text) rename to dismiss_conflict_as;
alter function ops.admin_retry_quarantined(text, bigint[], text) rename to retry_quarantined_as;
revoke all on function ops.accept_conflict_as(text, bigint, text) from public, emps_operator;
revoke all on function ops.dismiss_conflict_as(text, bigint, text) from public, emps_operator;
revoke all on function ops.retry_quarantined_as(text, bigint[], text) from public, emps_operator;

create or replace function ops.admin_accept_conflict(
    p_token text, p_row_id bigint, p_note text default null
) returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v record;
begin
    select * into v from ops.session_actor(p_token, array['Admin']);
    return ops.accept_conflict_as(v.username, p_row_id, p_note);
end
$$;

create or replace function ops.admin_dismiss_conflict(
    p_token text, p_row_id bigint, p_note text default null
) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v record;
begin
    select * into v from ops.session_actor(p_token, array['Admin']);
    perform ops.dismiss_conflict_as(v.username, p_row_id, p_note);
end
$$;

create or replace function ops.admin_retry_quarantined(
    p_token text, p_row_ids bigint[], p_note text default null
) returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v record;
begin
    select * into v from ops.session_actor(p_token, array['Admin']);
    return ops.retry_quarantined_as(v.username, p_row_ids, p_note);
end
$$;

revoke all on function ops.admin_accept_conflict(text, bigint, text) from public;
revoke all on function ops.admin_dismiss_conflict(text, bigint, text) from public;
revoke all on function ops.admin_retry_quarantined(text, bigint[], text) from public;
grant execute on function ops.admin_accept_conflict(text, bigint, text) to emps_operator;
grant execute on function ops.admin_dismiss_conflict(text, bigint, text) to emps_operator;
grant execute on function ops.admin_retry_quarantined(text, bigint[], text) to emps_operator;
