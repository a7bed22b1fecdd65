-- Every prediction says whether it can be trusted (`assessment`: ok, insufficient_data when the
-- features rest on too few readings or a stuck or silent sensor, out_of_distribution when levels
-- lie far outside the training data; `assessment_reason` in a technician's words), and gives
-- the remaining life in its equipment type's life unit (days for wall-time clocks, the counter's
-- unit such as cycles otherwise) at every severity. `remaining_life_beyond`: the estimate is the
-- cap the training data supports, the life is at least that ("more than 21 days").
-- Predictions written before this release were not assessed: their assessment stays null.
alter table ops.predictions
    add column if not exists assessment text
        check (assessment in ('ok', 'insufficient_data', 'out_of_distribution')),
    add column if not exists assessment_reason text,
    add column if not exists remaining_life double precision check (remaining_life >= 0),
    add column if not exists life_unit text,
    add column if not exists remaining_life_beyond boolean;
