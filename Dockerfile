# One image for the four services (intake, rules, scheduler, notifier):
#   docker build -t ppo-alerts .
#   docker run --rm ppo-alerts run intake        # or rules | scheduler | notifier | all
# Settings come from PPO_* environment variables (see .env.example); nothing here needs editing.

ARG PYTHON_IMAGE=python:3.11-slim
ARG NODE_IMAGE=node:20-slim

# --- frontend: the console's govuk-frontend from the lockfile (served from the image, no CDN) ---------
FROM ${NODE_IMAGE} AS frontend

WORKDIR /frontend
COPY services/console/frontend/package.json services/console/frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund

# --- build: install the project (runtime dependencies only, no dev extras) into a virtualenv ---------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
WORKDIR /src
# The context is limited by .dockerignore to pyproject.toml, README.md and the Python packages.
COPY . .
RUN /opt/venv/bin/pip install . \
 && /opt/venv/bin/pip check
# govuk-frontend's dist and package.json beside the installed services/console (services/console/assets.py
# looks in frontend/node_modules there); axe-core is for the browser tests only, not copied.
COPY --from=frontend /frontend/node_modules/govuk-frontend/dist /tmp/govuk-frontend/dist
COPY --from=frontend /frontend/node_modules/govuk-frontend/package.json /tmp/govuk-frontend/package.json
RUN dest="$(/opt/venv/bin/python -I -c 'import pathlib, services; print(pathlib.Path(services.__file__).parent)')/console/frontend/node_modules" \
 && mkdir -p "$dest" \
 && mv /tmp/govuk-frontend "$dest/govuk-frontend" \
 && /opt/venv/bin/python -I -c 'from services.console.assets import govuk_dist, govuk_version; print(govuk_version(), govuk_dist())'

# --- runtime -------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

# PPO_* defaults that suit a container (listen on all interfaces, state on /var/lib/ppo-alerts);
# each can still be overridden at run time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PPO_HTTP_HOST=0.0.0.0 \
    PPO_STATE_DIR=/var/lib/ppo-alerts \
    PPO_DIRECTORY_FILE=/app/deploy/sample/directory.yaml

RUN groupadd --system --gid 10001 ppo \
 && useradd --system --uid 10001 --gid ppo --home-dir /app --no-create-home --shell /usr/sbin/nologin ppo \
 && mkdir -p /app /var/lib/ppo-alerts \
 && chown ppo:ppo /var/lib/ppo-alerts

COPY --from=build /opt/venv /opt/venv
# Sample reference data (read-only for the service user); mount real files over /app/deploy/sample
# or point PPO_DIRECTORY_FILE / PPO_REGISTER_FILE elsewhere.
COPY deploy/sample /app/deploy/sample

WORKDIR /app
USER 10001:10001

# intake, rules, scheduler, notifier: /metrics and /healthz on each (PPO_*_PORT)
EXPOSE 8080 8081 8082 8083

# Works out which service this container runs from PID 1's arguments (all four for `run all`),
# reads its port from the same settings the service uses, and asks its /healthz (503 while starting).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u;from shared.settings import Settings;s=Settings();a=open('/proc/1/cmdline','rb').read().decode().split(chr(0));n=[x for x in ('intake','rules','scheduler','notifier') if x in a] or ['intake','rules','scheduler','notifier'];h=s.http_host if s.http_host not in ('0.0.0.0','::','') else '127.0.0.1';[u.urlopen('http://%s:%d/healthz'%(h,getattr(s,x+'_port')),timeout=4) for x in n]"]

ENTRYPOINT ["ppo-alerts"]
CMD ["run", "all"]
