# The test's stand-in for the official mysql:8 image (no image registry is
# reachable here): Debian 12's MariaDB on the debian:12 image that
# tests/docker/run.sh makes, configured by the same variables
# (MYSQL_DATABASE, MYSQL_USER, MYSQL_PASSWORD), plus MARIADB_PORT: the port
# it listens on, on 127.0.0.1 only (the test runs every service with
# network_mode: host).
FROM debian:12
ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q >/dev/null \
    && apt-get install -y -q --no-install-recommends mariadb-server mariadb-client >/dev/null \
    && rm -rf /var/lib/apt/lists/* /var/lib/mysql \
    && install -d -o mysql -g mysql /var/lib/mysql /run/mysqld
COPY mariadb-entrypoint.sh /usr/local/bin/mariadb-entrypoint.sh
USER mysql
ENTRYPOINT ["/usr/local/bin/mariadb-entrypoint.sh"]
