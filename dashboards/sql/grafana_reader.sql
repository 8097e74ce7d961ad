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
GRANT USAGE ON SCHEMA public TO grafana_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO grafana_reader;
