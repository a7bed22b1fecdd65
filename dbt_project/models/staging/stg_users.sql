-- One row per dashboard user; never the password hash (dbt's role may not read it: the columns
-- are named, not `*`).
with source as (
    select
        username,
        display_name,
        role,
        active,
        created_at,
        last_sign_in_at
    from {{ source('ops', 'users') }}
)

select * from source
