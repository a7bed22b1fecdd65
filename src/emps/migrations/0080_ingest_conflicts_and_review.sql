-- Ingest hardening: conflicting re-sends, ledger warnings, claim attempts, and the
-- admin's review of quarantined rows (accept or dismiss a conflict, retry a row).

-- A file ends 'conflict' when some of its rows re-send a stored (equipment, timestamp) with
-- different values and none of its rows was invalid.
alter table raw.ingest_files drop constraint if exists ingest_files_status_check;
alter table raw.ingest_files add constraint ingest_files_status_check check (
    status in ('claimed', 'loaded', 'partial', 'duplicate', 'conflict', 'quarantined', 'failed')
);
alter table raw.ingest_files add column if not exists rows_conflict integer;
-- What the file made us ignore or refuse without quarantining it: unknown columns, refused
-- coercions (booleans as numbers), an unclosed JSON array.
alter table raw.ingest_files add column if not exists warnings text[] not null default '{}';
-- Claims of this file so far: a run that dies on a file leaves it claimed; the next run takes
-- it back alone, and after EMPS_INGEST_MAX_ATTEMPTS claims it is quarantined unread.
alter table raw.ingest_files add column if not exists attempts integer not null default 1;
drop index if exists raw.ingest_files_sha256_loaded_key;
create unique index if not exists ingest_files_sha256_loaded_key
    on raw.ingest_files (sha256) where status in ('loaded', 'partial', 'conflict');
create index if not exists ingest_files_finished_at_idx on raw.ingest_files (finished_at);

-- kind: invalid (a value broke a rule), malformed (the row could not be read: wrong number of
-- fields, broken quoting, not a JSON object), unterminated (the file ends inside the row),
-- conflict (a different reading for a stored equipment and timestamp; stored_values holds the
-- stored one, raw_values the one received).
alter table raw.quarantined_rows add column if not exists kind text not null default 'invalid';
alter table raw.quarantined_rows drop constraint if exists quarantined_rows_kind_check;
alter table raw.quarantined_rows add constraint quarantined_rows_kind_check
    check (kind in ('invalid', 'malformed', 'unterminated', 'conflict'));
alter table raw.quarantined_rows add column if not exists stored_values jsonb;
alter table raw.quarantined_rows add column if not exists resolution text;
alter table raw.quarantined_rows drop constraint if exists quarantined_rows_resolution_check;
alter table raw.quarantined_rows add constraint quarantined_rows_resolution_check
    check (resolution in ('accepted', 'dismissed', 'released'));
alter table raw.quarantined_rows add column if not exists resolved_by text;
alter table raw.quarantined_rows add column if not exists resolved_at timestamptz;
alter table raw.quarantined_rows add column if not exists resolution_note text;
alter table raw.quarantined_rows add column if not exists retry_requested_by text;
alter table raw.quarantined_rows add column if not exists retry_requested_at timestamptz;
create index if not exists quarantined_rows_open_conflicts_idx
    on raw.quarantined_rows (equipment_id) where kind = 'conflict' and resolution is null;
create index if not exists quarantined_rows_retry_idx
    on raw.quarantined_rows (retry_requested_at)
    where retry_requested_at is not null and resolution is null;

-- Entries of landing/incoming that ingest never claims (dot files, *.part / *.tmp names,
-- symbolic links, anything not a regular file) once they are older than
-- EMPS_INGEST_IGNORED_WARN_S: a writer that never renamed its file, or a link someone left.
-- Rows disappear with their entry.
create table if not exists raw.landing_ignored (
    path text primary key,
    why text not null,
    size_bytes bigint,
    modified_at timestamptz not null,
    first_seen_at timestamptz not null default now(),
    last_seen_at timestamptz not null default now()
);

-- Readings an admin corrected by accepting a conflict. The features of the window the reading
-- feeds are rebuilt and the predictions of that window rescored by the next ingest run
-- (applied_at), the earlier predictions keeping a note.
create table if not exists ops.reading_corrections (
    id bigserial primary key,
    quarantined_row_id bigint references raw.quarantined_rows (id) on delete set null,
    equipment_id text not null,
    ts timestamptz not null,
    previous_values jsonb not null,
    new_values jsonb not null,
    accepted_by text not null,
    accepted_at timestamptz not null default now(),
    applied_at timestamptz,
    rescored integer,
    apply_note text
);
create index if not exists reading_corrections_pending_idx
    on ops.reading_corrections (accepted_at) where applied_at is null;

-- Why a prediction is no longer current (it was rescored after a corrected reading).
alter table ops.predictions add column if not exists note text;

grant select, insert, update, delete on raw.landing_ignored, ops.reading_corrections
    to emps_writer;
grant usage, select on sequence ops.reading_corrections_id_seq to emps_writer;
grant select on raw.landing_ignored, ops.reading_corrections to emps_reader;

-- An open conflict as a reading: its equipment, timestamp and the values received.
create or replace function ops.conflict_for_update(p_row_id bigint)
returns raw.quarantined_rows
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_row raw.quarantined_rows;
begin
    select * into v_row from raw.quarantined_rows where id = p_row_id for update;
    if not found then
        raise exception 'quarantined row % does not exist', p_row_id using errcode = 'no_data_found';
    end if;
    if v_row.kind <> 'conflict' then
        raise exception 'quarantined row % is % data, not a conflicting reading', p_row_id, v_row.kind
            using errcode = 'check_violation';
    end if;
    if v_row.resolution is not null then
        raise exception 'conflict % was already % by % at %', p_row_id, v_row.resolution,
            v_row.resolved_by, v_row.resolved_at using errcode = 'check_violation';
    end if;
    return v_row;
end
$$;

-- Admin: the received reading replaces the stored one (audited); the affected window's features
-- are rebuilt and rescored by the next ingest run. Refused when the stored reading changed since
-- the conflict was recorded (someone accepted another version first): review it again.
create or replace function ops.admin_accept_conflict(
    p_admin text, p_row_id bigint, p_note text default null
) returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_role text := ops.user_role_for(p_admin, array['Admin']);
    v_row raw.quarantined_rows := ops.conflict_for_update(p_row_id);
    v_ts timestamptz := (v_row.raw_values ->> 'timestamp')::timestamptz;
    v_current jsonb;
    v_stored jsonb;
    v_received jsonb;
    v_sets text;
    v_correction bigint;
begin
    select to_jsonb(r) into v_current from raw.sensor_readings r
    where r.equipment_id = v_row.equipment_id and r.ts = v_ts for update;
    if v_current is null then
        raise exception 'the stored reading of % at % no longer exists', v_row.equipment_id, v_ts
            using errcode = 'no_data_found';
    end if;
    select jsonb_object_agg(c.sensor, coalesce(v_current -> c.sensor, 'null'::jsonb)),
           jsonb_object_agg(c.sensor, coalesce(v_row.raw_values -> c.sensor, 'null'::jsonb)),
           string_agg(format('%I = ($1 ->> %L)::double precision', c.sensor, c.sensor), ', ')
    into v_stored, v_received, v_sets
    from raw.sensor_catalog c;
    if exists (
        select 1 from raw.sensor_catalog c
        where coalesce(v_current -> c.sensor, 'null'::jsonb)
              is distinct from coalesce(v_row.stored_values -> c.sensor, 'null'::jsonb)
    ) then
        raise exception 'the stored reading of % at % changed since conflict % was recorded; '
            'review it again', v_row.equipment_id, v_ts, p_row_id using errcode = 'check_violation';
    end if;
    execute format(
        'update raw.sensor_readings set %s, ingest_file_id = $2, ingested_at = now() '
        'where equipment_id = $3 and ts = $4', v_sets
    ) using v_row.raw_values, v_row.ingest_file_id, v_row.equipment_id, v_ts;
    update raw.quarantined_rows
    set resolution = 'accepted', resolved_by = p_admin, resolved_at = now(),
        resolution_note = p_note
    where id = p_row_id;
    -- Other open conflicts of the same reading now differ from a new stored version.
    update raw.quarantined_rows
    set stored_values = v_received
    where kind = 'conflict' and resolution is null and id <> p_row_id
      and equipment_id = v_row.equipment_id and (raw_values ->> 'timestamp')::timestamptz = v_ts;
    insert into ops.reading_corrections
        (quarantined_row_id, equipment_id, ts, previous_values, new_values, accepted_by)
    values (p_row_id, v_row.equipment_id, v_ts, v_stored, v_received, p_admin)
    returning id into v_correction;
    insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details)
    values (p_admin, v_role, 'reading.accept_conflict', 'reading',
            v_row.equipment_id || ' @ ' || to_char(v_ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            jsonb_build_object('quarantined_row_id', p_row_id, 'ingest_file_id', v_row.ingest_file_id,
                               'from', v_stored, 'to', v_received, 'note', p_note,
                               'correction_id', v_correction));
    return v_correction;
end
$$;

-- Admin: keep the stored reading and close the conflict (audited).
create or replace function ops.admin_dismiss_conflict(
    p_admin text, p_row_id bigint, p_note text default null
) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_role text := ops.user_role_for(p_admin, array['Admin']);
    v_row raw.quarantined_rows := ops.conflict_for_update(p_row_id);
begin
    update raw.quarantined_rows
    set resolution = 'dismissed', resolved_by = p_admin, resolved_at = now(),
        resolution_note = p_note
    where id = p_row_id;
    insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details)
    values (p_admin, v_role, 'reading.dismiss_conflict', 'reading',
            v_row.equipment_id || ' @ ' || (v_row.raw_values ->> 'timestamp'),
            jsonb_build_object('quarantined_row_id', p_row_id, 'ingest_file_id', v_row.ingest_file_id,
                               'kept', v_row.stored_values, 'refused', v_row.raw_values,
                               'note', p_note));
end
$$;

-- Admin: validate quarantined rows again at the next ingest run (after registering their
-- equipment, say, or to take a row the file ended inside as it is); rows that pass load and are
-- marked released, the others keep their (new) reasons. Returns how many rows were queued.
create or replace function ops.admin_retry_quarantined(
    p_admin text, p_row_ids bigint[], p_note text default null
) returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_role text := ops.user_role_for(p_admin, array['Admin']);
    v_ids bigint[];
begin
    with queued as (
        update raw.quarantined_rows
        set retry_requested_by = p_admin, retry_requested_at = now(), resolution_note = p_note
        where id = any (p_row_ids) and kind <> 'conflict' and resolution is null
        returning id
    )
    select coalesce(array_agg(id order by id), '{}') into v_ids from queued;
    insert into ops.audit_log (actor, actor_role, action, target_type, target_id, details)
    values (p_admin, v_role, 'quarantine.retry', 'quarantined_rows',
            array_to_string(v_ids, ','),
            jsonb_build_object('requested', p_row_ids, 'queued', v_ids, 'note', p_note));
    return coalesce(array_length(v_ids, 1), 0);
end
$$;

do $$
declare
    fn text;
begin
    foreach fn in array array[
        'ops.conflict_for_update(bigint)',
        'ops.admin_accept_conflict(text, bigint, text)',
        'ops.admin_dismiss_conflict(text, bigint, text)',
        'ops.admin_retry_quarantined(text, bigint[], text)'
    ] loop
        execute format('revoke all on function %s from public', fn);
    end loop;
    foreach fn in array array[
        'ops.admin_accept_conflict(text, bigint, text)',
        'ops.admin_dismiss_conflict(text, bigint, text)',
        'ops.admin_retry_quarantined(text, bigint[], text)'
    ] loop
        execute format('grant execute on function %s to emps_operator', fn);
    end loop;
end
$$;
