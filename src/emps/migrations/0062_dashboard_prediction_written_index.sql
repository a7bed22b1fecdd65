-- Dashboard: the latest-prediction mart (analytics.mart_equipment_latest_prediction) is refreshed
-- after every scoring run from the predictions written since its last refresh. ops.predictions had
-- no index on predicted_at, so each refresh would read every partition. Rows are written in
-- predicted_at order, so a BRIN index is tiny and enough.
create index if not exists predictions_predicted_at_brin_idx
    on ops.predictions using brin (predicted_at);
