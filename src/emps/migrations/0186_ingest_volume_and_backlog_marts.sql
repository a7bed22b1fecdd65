-- Read models for the ingest chart and the outbox warning (analytics.mart_ingest_volume,
-- analytics.mart_notification_backlog): dbt's role reads the outbox through the reader's view
-- (delivery states, no recipient or text), and the ledger by its UTC receiving day, which a
-- filter on the mart's day reaches.
grant select on ops.notification_deliveries to emps_writer;
create index if not exists ingest_files_received_day_idx
    on raw.ingest_files (date_bin(interval '1 day', received_at, timestamptz '2000-01-01 00:00:00+00'));
