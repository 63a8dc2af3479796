# The Fleet Console image: web (gunicorn), worker and beat (Celery) and the one-shot migrate all run
# from it (docker-compose.yml). Configuration comes from the environment at run time, never from
# the image: see docs/deployment.md.
FROM python:3.11-slim-bookworm

# PYTHONPATH: the project is imported from /app, not from the copy `pip install .` puts into
# site-packages: settings.BASE_DIR (templates/, static/) is where console/settings.py lives, and the
# celery command, unlike manage.py and gunicorn, does not put the working directory on sys.path.
# CONSOLE_STATIC_ROOT: collectstatic writes there at build time, WhiteNoise serves from there.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    CONSOLE_STATIC_ROOT=/app/staticfiles

# pg_dump and pg_restore for backups and restore drills (PostgreSQL 15 client, as the demo fleet).
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*

# An unprivileged user runs every process; the code stays root-owned and read-only to it.
# BACKUP_DIR (docker-compose.yml) belongs to it: a new volume mounted there takes that owner.
RUN groupadd --system --gid 10001 console \
    && useradd --system --uid 10001 --gid console --home-dir /home/console --create-home \
       --shell /usr/sbin/nologin console \
    && install -d -o console -g console -m 0750 /var/backups/fleet-console

WORKDIR /app

# Only what the console needs (there is no .dockerignore: .venv/ and .fleet/, which holds the local
# fleet's passwords, must never reach the image, so nothing is copied wholesale).
COPY pyproject.toml manage.py ./
COPY console ./console
COPY tenants ./tenants
COPY migrations_ui ./migrations_ui
COPY monitors ./monitors
RUN pip install . \
    && rm -rf build ./*.egg-info \
    && find /app -name __pycache__ -type d -prune -exec rm -rf {} +

COPY templates ./templates
COPY static ./static
RUN python manage.py collectstatic --noinput

USER console:console
EXPOSE 8000
CMD ["gunicorn", "console.wsgi", "--bind", "0.0.0.0:8000", "--threads", "4", \
     "--access-logfile", "-", "--error-logfile", "-"]
