-- bank-db1 first-start initialisation (mounted in /docker-entrypoint-initdb.d, runs once on an
-- empty data directory, after the image created MYSQL_DATABASE=bank_source and MYSQL_USER, and
-- after init-migrator.sh created bank_migrator).
--
-- `default`, Django's control-plane database (auth, sessions, admin log, audit, beat schedule),
-- is a database of its own on the first ledger's server: it must never share a database with a
-- ledger, because Django records applied migrations per database. Tables are created by
-- `python manage.py migrate_ledgers` (the compose `migrate` service, as bank_migrator), not here;
-- it then grants the application's user (bank_user) exactly the DML it needs on each table
-- (bankcore/privileges.py). bank_user holds nothing on bank_core before that.

CREATE DATABASE IF NOT EXISTS bank_core
  CHARACTER SET utf8mb4
  COLLATE utf8mb4_unicode_ci;

GRANT ALL PRIVILEGES ON bank_core.* TO 'bank_migrator'@'%' WITH GRANT OPTION;

FLUSH PRIVILEGES;
