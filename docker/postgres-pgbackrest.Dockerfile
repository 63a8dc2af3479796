# demo-primary: the postgres image with pgBackRest, which archives its WAL (archive_command) into
# the pgbackrest-repo volume (docker/pgbackrest.conf), like scripts/localfleet.py's primary.
FROM postgres:15
RUN apt-get update \
    && apt-get install -y --no-install-recommends pgbackrest \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 0750 /var/lib/pgbackrest /var/log/pgbackrest /var/spool/pgbackrest
