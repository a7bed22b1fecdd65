-- The reader's view of notifications shows when each is due, so the dashboard and /metrics can
-- tell how long the oldest has waited (still without recipients, texts or errors).
create or replace view ops.notification_deliveries with (security_barrier) as
select id, alert_id, channel, event, status, attempts, next_attempt_at, created_at, sent_at, due_at
from ops.notifications;
