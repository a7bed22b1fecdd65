-- Read models: the dashboard, the API and the reports read dbt marts only (views owned by
-- emps_writer over the raw and ops tables). A view reads its tables with its owner's rights,
-- so dbt's role needs select where a new mart looks, and no more than the dashboard's reader
-- already sees: the model promotion history (mart_model_promotions, mart_failures_caught), the
-- operations alerts, the audit trail, and the users without their password hashes.
grant select on ops.model_promotions, ops.operations_alerts, ops.audit_log to emps_writer;
grant select (username, display_name, role, active, created_at, last_sign_in_at)
    on ops.users to emps_writer;
