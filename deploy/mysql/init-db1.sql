-- bank-db1 first-start initialisation (mounted in /docker-entrypoint-initdb.d, runs once on an
-- empty data directory, after the image created MYSQL_DATABASE=bank_source and MYSQL_USER).
--
-- `default`, Django's control-plane database (auth, sessions, admin log, audit, beat schedule),
-- is a database of its own on the first ledger's server: it must never share a database with a
-- ledger, because Django records applied migrations per database. Tables are created by
-- `python manage.py migrate_ledgers` (the compose `migrate` service), not here.
--
-- The user name must match DB1_USER / DB_DEFAULT_USER (bank_user in docker-compose.yml). No
-- password here: the image creates bank_user with MYSQL_PASSWORD from .env.

CREATE DATABASE IF NOT EXISTS bank_core
  CHARACTER SET utf8mb4
  COLLATE utf8mb4_unicode_ci;

GRANT ALL PRIVILEGES ON bank_core.* TO 'bank_user'@'%';

FLUSH PRIVILEGES;
