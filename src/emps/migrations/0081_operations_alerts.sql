-- Operations alerts (emps.alerting.operations): what is wrong with the platform itself, as
-- opposed to the equipment. One open alert per rule and subject until the rule stops finding it.
create table if not exists ops.operations_alerts (
    id bigserial primary key,
    rule text not null,
    subject text not null,
    status text not null default 'open' check (status in ('open', 'resolved')),
    summary text not null,
    details jsonb not null default '{}',
    opened_at timestamptz not null default now(),
    last_seen_at timestamptz not null default now(),
    last_notified_at timestamptz,
    notifications integer not null default 0,
    resolved_at timestamptz
);
create unique index if not exists operations_alerts_one_open_idx
    on ops.operations_alerts (rule, subject) where status = 'open';
create index if not exists operations_alerts_opened_at_idx on ops.operations_alerts (opened_at);

grant select, insert, update, delete on ops.operations_alerts to emps_writer;
grant usage, select on sequence ops.operations_alerts_id_seq to emps_writer;
grant select on ops.operations_alerts to emps_reader;
