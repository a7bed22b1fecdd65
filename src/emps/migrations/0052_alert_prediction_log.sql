-- Which HIGH/CRITICAL predictions the alert rules have already handled, and how. Lets any alert
-- run pick up predictions whose event was lost or whose own run has not started yet, and makes
-- a replayed event a no-op even after the alert moved on to a newer prediction.
create table if not exists ops.alert_prediction_log (
    prediction_id bigint not null,
    prediction_ts timestamptz not null,
    equipment_id text not null,
    alert_id bigint,
    action text not null,
    processed_at timestamptz not null default now(),
    primary key (prediction_id, prediction_ts)
);
create index if not exists alert_prediction_log_processed_idx
    on ops.alert_prediction_log (processed_at);

grant select, insert, update, delete on ops.alert_prediction_log to emps_writer;
grant select on ops.alert_prediction_log to emps_reader;
