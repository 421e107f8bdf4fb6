#!/bin/sh
# First-start initialisation of every ledger server (mounted in /docker-entrypoint-initdb.d, runs
# once on an empty data directory, after the image created MYSQL_DATABASE and MYSQL_USER, before
# the *.sql files named after it).
#
# Two database users, least privilege (docs/security.md "Least privilege in the database"):
#   bank_user      the application's (MYSQL_USER, DB1_USER/DB2_USER). The image grants it everything
#                  on MYSQL_DATABASE; `manage.py migrate_ledgers` revokes that and grants it, table by
#                  table, only the DML it needs: no DDL, no TRIGGER, no UPDATE or DELETE of entries
#                  or audit rows (bankcore/privileges.py).
#   bank_migrator  the migrator's (DB_MIGRATE_USER in the compose `migrate` service): every privilege
#                  on the server's databases, WITH GRANT OPTION to hand the application's out.
# The password comes from DB_MIGRATE_PASSWORD, which an .sql file cannot read; it is one of the
# secrets deploy/deploy.sh generates (hex).
set -eu
case "${DB_MIGRATE_PASSWORD:-}" in
    "" | *[!A-Za-z0-9]*)
        echo "init-migrator.sh: DB_MIGRATE_PASSWORD must be non-empty and alphanumeric" >&2
        exit 1
        ;;
esac
MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mysql --protocol=socket -uroot <<SQL
CREATE USER IF NOT EXISTS 'bank_migrator'@'%' IDENTIFIED BY '${DB_MIGRATE_PASSWORD}';
GRANT ALL PRIVILEGES ON \`${MYSQL_DATABASE}\`.* TO 'bank_migrator'@'%' WITH GRANT OPTION;
SQL
