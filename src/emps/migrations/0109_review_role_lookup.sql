-- The admin's review functions of 0080 (renamed *_as by 0108, reached only through a session
-- token) read the acting user's role with ops.user_role_for, which 0101 dropped with the
-- functions that took a user name from the caller. Bring it back as an internal helper: nobody
-- but the owner's security-definer functions may call it.
create or replace function ops.user_role_for(p_username text, p_allowed text[])
returns text
language plpgsql stable security definer set search_path = pg_catalog, pg_temp
as $$
declare
    v_role text;
begin
    select role into v_role from ops.users where username = p_username and active;
    if v_role is null then
        raise exception 'user % is unknown or deactivated', p_username
            using errcode = 'insufficient_privilege';
    end if;
    if not v_role = any (p_allowed) then
        raise exception 'user % is a %, and only % may do this', p_username, v_role,
            array_to_string(p_allowed, ' or ') using errcode = 'insufficient_privilege';
    end if;
    return v_role;
end
$$;

revoke all on function ops.user_role_for(text, text[]) from public, emps_reader, emps_writer,
    emps_operator, emps_ingest, emps_scoring, emps_alerting;
