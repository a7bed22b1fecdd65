-- Who may use the catalog v2 and fleet-pack tables, now that each stage has its own role.
-- Operating regimes are fitted by the feature build (emps.transform, as dbt's role).
grant select, insert, update, delete on raw.operating_regimes to emps_writer;
grant select on raw.equipment_types, raw.equipment_type_channels, raw.operating_regimes
    to emps_ingest, emps_scoring, emps_alerting, emps_reader;
grant select on raw.heldout_remaining_life to emps_scoring, emps_reader;
