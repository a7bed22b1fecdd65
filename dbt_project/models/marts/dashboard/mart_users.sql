-- One row per dashboard user: name, role, whether active and when last signed in.
with users as (
    select * from {{ ref('stg_users') }}
)

select * from users
