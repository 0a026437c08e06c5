-- Whether a text can be stored in a column of a given type, without raising.
--
-- A mapping may send a user_metadata value into a column of another type (an `integer`
-- `credits`, say), and anyone can write their own user_metadata. A value that does not cast
-- ("12; drop table x") must fail that user alone: every statement that reads it (a run's insert,
-- the status counts, the drift listings) asks this first instead of casting blindly.
--
-- PostgreSQL 16 and later answer it with pg_input_is_valid, inlined and cheap. Before that, the
-- only way is to try the cast in a subtransaction, once per value that needs it: a cost only
-- mappings that feed metadata into a non-text column pay. `type_name` is a type as
-- format_type() writes it, from the catalog, never from a request; only usersync's own role
-- may call this.
do $$
begin
    if current_setting('server_version_num')::int >= 160000 then
        create function usersync.castable(value text, type_name text)
        returns boolean
        language sql
        stable
        as 'select value is null or pg_catalog.pg_input_is_valid(value, type_name)';
    else
        create function usersync.castable(value text, type_name text)
        returns boolean
        language plpgsql
        stable
        set search_path = ''
        as $body$
        begin
            if value is null then
                return true;
            end if;
            execute pg_catalog.format('select %L::%s', value, type_name);
            return true;
        exception when others then
            return false;
        end
        $body$;
    end if;
end
$$;

revoke all on function usersync.castable(text, text) from public;
