-- demo-scratch, first start only (/docker-entrypoint-initdb.d): the server restore drills restore
-- into. pg_stat_statements is preloaded by the command line, as on every server of the demo fleet.
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
