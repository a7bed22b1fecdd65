-- Dashboard: "predictions in the last hour" on the fleet overview. ops.predictions has no index
-- on time alone, so that count read the whole current month partition (0.5 s at 10,000 equipment).
-- Rows arrive in time order, so a BRIN index is tiny and enough.
create index if not exists predictions_ts_brin_idx on ops.predictions using brin (ts);
