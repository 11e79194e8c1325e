# syntax=docker/dockerfile:1
# One image for every engine process; docker-compose.yml picks the subcommand (serve, worker,
# scheduler, migrate), because the entrypoint is the `slotengine` console script.

# GraphiQL's scripts and the board's graphql-ws client come from the npm registry (see
# src/slotengine/api/vendor.py). Node lives only in this stage so the runtime image carries none
# of it. Without these files GraphiQL would work only for browsers that can reach unpkg.com, and
# the board would have no live updates.
FROM node:20-bookworm-slim AS graphiql
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /graphiql
# vendor.py needs only the standard library, so it runs here without the package installed.
COPY src/slotengine/api/vendor.py ./
# fetch() rather than main(): main() downgrades a failed download to a warning, and an image
# silently missing its assets is worse than a build that stops.
RUN python3 -c "import vendor; vendor.fetch(vendor.GRAPHIQL); vendor.fetch(vendor.BOARD); \
assert vendor.present(vendor.GRAPHIQL) and vendor.present(vendor.BOARD)"


FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# pyproject.toml names README.md as the long description, so the build needs it.
COPY pyproject.toml README.md ./
COPY src ./src
COPY workers ./workers
RUN pip install .
# package-data does not list static/vendor, so the assets are copied into the installed package,
# to the directory the app serves them from (vendor.VENDOR), which the check below confirms.
COPY --from=graphiql /graphiql/static/vendor /tmp/graphiql-vendor
RUN python -c "import shutil; from slotengine.api import vendor; \
shutil.copytree('/tmp/graphiql-vendor', vendor.VENDOR, dirs_exist_ok=True); \
assert vendor.present(vendor.GRAPHIQL) and vendor.present(vendor.BOARD)" \
    && rm -rf /tmp/graphiql-vendor


FROM python:3.11-slim
# procps for pgrep: the worker's healthcheck looks for its worker processes.
RUN apt-get update \
    && apt-get install -y --no-install-recommends procps \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --create-home --home-dir /home/slotengine slotengine
# The venv stays owned by root: the engine has no reason to modify its own code.
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER slotengine
WORKDIR /home/slotengine
EXPOSE 8000
ENTRYPOINT ["slotengine"]
# 0.0.0.0 because the settings' default host (127.0.0.1) is unreachable from outside a container.
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
