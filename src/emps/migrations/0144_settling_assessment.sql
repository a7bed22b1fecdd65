-- A prediction made less than the longest feature window after a service or repair is
-- `settling`: its windows still mix readings from before the work with readings after it. The
-- alert rules open no alert on it (ml.assess).
alter table ops.predictions drop constraint if exists predictions_assessment_check;
alter table ops.predictions
    add constraint predictions_assessment_check
        check (assessment in ('ok', 'settling', 'insufficient_data', 'out_of_distribution'));
