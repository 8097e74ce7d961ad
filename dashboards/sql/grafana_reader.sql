-- Read-only role for Grafana's Postgres datasource (dashboards/provisioning/datasources/harness.yml).
-- Run once per results database, as its owner:  psql -d harness -f dashboards/sql/grafana_reader.sql
-- then give the role a password:               ALTER ROLE grafana_reader PASSWORD '...';
-- Safe to run again. Every session of the role is read-only, and it can read nothing but this schema.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'grafana_reader') THEN
    CREATE ROLE grafana_reader LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT;
  END IF;
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO grafana_reader', current_database());
END
$$;
ALTER ROLE grafana_reader SET default_transaction_read_only = on;
ALTER ROLE grafana_reader SET statement_timeout = '30s';
-- No JIT: over a large test_results its cost model turns it on and compiling takes ~0.5 s a query (a
-- 90-day panel went from 0.1 s to 0.6 s at 10M results); the panels' queries never win that back.
ALTER ROLE grafana_reader SET jit = off;
GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
