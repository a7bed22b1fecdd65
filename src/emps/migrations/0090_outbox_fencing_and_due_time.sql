-- Outbox: fenced updates and the age of the oldest waiting notification.

-- Each claim gets its own token; a sender updates a row only while the row still carries its
-- name and token, so a sender whose lease ran out cannot mark (or send) a row another holds.
alter table ops.notifications add column if not exists claim_token uuid;

-- When the notification first became due (next_attempt_at moves with every retry; quiet hours
-- can put the first due time after created_at). The operations alert on the outbox measures
-- how long the oldest waiting notification has been due.
alter table ops.notifications add column if not exists due_at timestamptz;
update ops.notifications
set due_at = case when status = 'pending' then next_attempt_at else created_at end
where due_at is null;
alter table ops.notifications alter column due_at set default now();
alter table ops.notifications alter column due_at set not null;
create index if not exists notifications_waiting_due_idx
    on ops.notifications (due_at) where status in ('pending', 'failed', 'sending');
