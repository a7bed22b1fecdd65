-- The ops layer: what the platform decided and what people did about it.

create table if not exists ops.predictions (
    id bigserial,
    equipment_id text not null,
    ts timestamptz not null,
    predicted_at timestamptz not null default now(),
    failure_probability double precision not null
        check (failure_probability between 0 and 1),
    health_score smallint not null check (health_score between 0 and 100),
    severity text not null check (severity in ('LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    days_until_failure double precision,
    model_version text not null,
    explanation jsonb not null default '[]',
    primary key (id, ts)
) partition by range (ts);
create table if not exists ops.predictions_default partition of ops.predictions default;
create index if not exists predictions_equipment_idx on ops.predictions (equipment_id);
create index if not exists predictions_severity_idx on ops.predictions (severity);
create index if not exists predictions_equipment_ts_idx on ops.predictions (equipment_id, ts);

create table if not exists ops.alerts (
    id bigserial primary key,
    equipment_id text not null,
    prediction_id bigint,
    prediction_ts timestamptz,
    severity text not null check (severity in ('LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    failure_mode text,
    message text not null,
    status text not null default 'open' check (status in ('open', 'acknowledged', 'resolved')),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    acknowledged_at timestamptz,
    acknowledged_by text,
    resolved_at timestamptz,
    resolved_by text,
    resolution_note text,
    escalation_level integer not null default 0,
    last_notified_at timestamptz,
    foreign key (prediction_id, prediction_ts)
        references ops.predictions (id, ts) on delete set null (prediction_id, prediction_ts)
);
create index if not exists alerts_equipment_idx on ops.alerts (equipment_id);
create index if not exists alerts_status_idx on ops.alerts (status);
create index if not exists alerts_severity_idx on ops.alerts (severity);
create index if not exists alerts_created_at_idx on ops.alerts (created_at);
-- One open alert per equipment and failure mode.
create unique index if not exists alerts_one_open_idx
    on ops.alerts (equipment_id, coalesce(failure_mode, ''))
    where status <> 'resolved';

create table if not exists ops.maintenance_tasks (
    id bigserial primary key,
    equipment_id text not null,
    alert_id bigint references ops.alerts (id) on delete set null,
    task_type text not null
        check (task_type in ('inspection', 'corrective', 'preventive', 'repair')),
    priority smallint not null default 3 check (priority between 1 and 5),
    status text not null default 'scheduled'
        check (status in ('scheduled', 'in_progress', 'completed', 'cancelled')),
    scheduled_date timestamptz not null,
    completed_date timestamptz,
    outcome text check (outcome in ('fault_found', 'no_fault_found', 'failed_before_service')),
    notes text,
    created_by text not null default 'system',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index if not exists maintenance_equipment_idx on ops.maintenance_tasks (equipment_id);
create index if not exists maintenance_status_idx on ops.maintenance_tasks (status);
create index if not exists maintenance_scheduled_idx on ops.maintenance_tasks (scheduled_date);
-- No duplicate task for the same open alert.
create unique index if not exists maintenance_one_open_per_alert_idx
    on ops.maintenance_tasks (alert_id)
    where alert_id is not null and status in ('scheduled', 'in_progress');

-- Outbox: written in the same transaction as the alert, delivered by the sender.
create table if not exists ops.notifications (
    id bigserial primary key,
    alert_id bigint references ops.alerts (id) on delete cascade,
    channel text not null check (channel in ('email', 'sms')),
    recipient text not null,
    subject text not null default '',
    body_text text not null,
    body_html text,
    dedupe_key text not null unique,
    status text not null default 'pending'
        check (status in ('pending', 'sending', 'sent', 'failed', 'dead')),
    attempts integer not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_error text,
    created_at timestamptz not null default now(),
    sent_at timestamptz
);
create index if not exists notifications_due_idx
    on ops.notifications (next_attempt_at) where status in ('pending', 'failed');

create table if not exists ops.model_promotions (
    id bigserial primary key,
    model_name text not null,
    alias text not null,
    from_version text,
    to_version text not null,
    promoted_by text not null,
    promoted_at timestamptz not null default now(),
    reason text,
    metrics jsonb not null default '{}'
);

create table if not exists ops.audit_log (
    id bigserial primary key,
    at timestamptz not null default now(),
    actor text not null,
    actor_role text,
    action text not null,
    target_type text,
    target_id text,
    details jsonb not null default '{}'
);
create index if not exists audit_log_at_idx on ops.audit_log (at);

grant select, insert, update, delete on all tables in schema raw, ops to emps_writer;
grant usage, select on all sequences in schema raw, ops to emps_writer;
grant select on all tables in schema raw, ops to emps_reader;
