-- One row per landing-zone entry ingest never claims, old enough to look forgotten.
with ignored as (
    select * from {{ ref('stg_landing_ignored') }}
)

select * from ignored
