-- Runs once, when the PostgreSQL volume is empty: the basic-auth app keeps its users in a database
-- of its own, beside the tracking store (POSTGRES_DB).
CREATE DATABASE mlflow_auth;
