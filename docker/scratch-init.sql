-- demo-scratch, first start only (/docker-entrypoint-initdb.d): the server restore drills restore
-- into. pg_stat_statements is preloaded by the command line, as on every server of the demo fleet.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;

-- Restore drills check each restored copy with pg_amcheck as fleet_owner (made by
-- 05-console-roles.sh): amcheck is not a trusted extension, so every new database gets it from
-- template1, with its functions granted.
\connect template1
CREATE EXTENSION IF NOT EXISTS amcheck;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO fleet_owner;
