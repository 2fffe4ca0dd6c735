#!/bin/sh
# Entry point of tests/docker/mariadb.Dockerfile. On the first start (an
# empty /var/lib/mysql) it creates the system tables, then, on a server
# without networking, the database MYSQL_DATABASE and the user MYSQL_USER
# with MYSQL_PASSWORD, as the mysql image does; then it runs the server on
# 127.0.0.1:MARIADB_PORT. So the server answers over TCP only once the
# user exists (the health check logs in as that user).
set -eu
data=/var/lib/mysql
port=${MARIADB_PORT:-3306}
: "${MYSQL_DATABASE:?}" "${MYSQL_USER:?}" "${MYSQL_PASSWORD:?}"

if [ ! -d "$data/mysql" ]; then
    echo "mariadb-entrypoint: initialising $data" >&2
    mariadb-install-db --user=mysql --datadir="$data" --skip-test-db \
        --auth-root-authentication-method=socket >/dev/null
    sock=/run/mysqld/init.sock
    mariadbd --datadir="$data" --socket="$sock" --skip-networking &
    pid=$!
    tries=0
    until mariadb --socket="$sock" -umysql -e 'SELECT 1' >/dev/null 2>&1; do
        tries=$((tries + 1))
        if [ "$tries" -gt 300 ] || ! kill -0 "$pid" 2>/dev/null; then
            echo "mariadb-entrypoint: the initialising server did not answer" >&2
            exit 1
        fi
        sleep 0.1
    done
    # a string literal: backslashes and quotes doubled
    lit() { printf %s "$1" | sed -e 's/\\/\\\\/g' -e "s/'/''/g"; }
    mariadb --socket="$sock" -umysql <<SQL
CREATE DATABASE \`$MYSQL_DATABASE\` CHARACTER SET utf8mb4;
CREATE USER '$(lit "$MYSQL_USER")'@'%' IDENTIFIED BY '$(lit "$MYSQL_PASSWORD")';
GRANT ALL ON \`$MYSQL_DATABASE\`.* TO '$(lit "$MYSQL_USER")'@'%';
SQL
    mariadb-admin --socket="$sock" -umysql shutdown
    wait "$pid" || true
    echo "mariadb-entrypoint: database $MYSQL_DATABASE and user $MYSQL_USER created" >&2
fi
exec mariadbd --datadir="$data" --socket=/run/mysqld/mysqld.sock \
    --port="$port" --bind-address=127.0.0.1
