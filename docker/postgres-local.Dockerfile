# A local stand-in for the postgres:16 image, for `make container-test` only: no registry
# serves images on the project's machines. Debian's PostgreSQL on the local debian:sid-slim
# base (scripts/container-base.sh), with an entrypoint that honours the three variables
# docker/compose.yaml gives the official image (POSTGRES_USER, POSTGRES_PASSWORD,
# POSTGRES_DB) and keeps its data in the same place (/var/lib/postgresql/data). pg_isready
# (the compose healthcheck) is the server's own: Debian's /usr/bin wrapper wants a cluster.
# Users run the official image; docker/compose.local-postgres.yaml swaps this one in.
FROM debian:sid-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
 && install -d -o postgres -g postgres -m 2775 /var/run/postgresql \
 && ln -s "$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)/pg_isready" /usr/local/bin/pg_isready
COPY postgres-local-entrypoint.sh /usr/local/bin/postgres-local-entrypoint
ENV PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
VOLUME ["/var/lib/postgresql/data"]
ENTRYPOINT ["/usr/local/bin/postgres-local-entrypoint"]
