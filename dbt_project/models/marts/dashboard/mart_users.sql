-- One row per dashboard user: name, role, whether active and when last signed in.
with users as (
    select * from {{ ref('stg_users') }}
),

final as (
    select
        username,
        display_name,
        role,
        active,
        created_at,
        last_sign_in_at
    from users
)

select * from final
