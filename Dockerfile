# syntax=docker/dockerfile:1
# One image for every ATOM process: the command picks it (see docker-compose.yml).
#   docker build -t atom:0.1.0 .
#   docker run atom:0.1.0 api --host 0.0.0.0      # or: worker | worker --pool ml | beat | flower
# Python is pinned to the patch release the test suite runs on; pin the digest too when you
# mirror the image (`docker buildx imagetools inspect python:3.11.7-slim-bookworm`).
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# ---- build: a virtual environment with ATOM and its pinned dependency tree -----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/atom
COPY pyproject.toml constraints.txt README.md ./
COPY atom ./atom
COPY api ./api
COPY workers ./workers
COPY beat ./beat
COPY cli ./cli
# constraints.txt pins the whole tree: the image runs exactly the versions the tests ran.
RUN /opt/atom/bin/pip install -c constraints.txt . \
 && /opt/atom/bin/pip check

# ---- runtime: the environment only, run as an unprivileged user ----------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="ATOM" \
      org.opencontainers.image.description="ATOM workflow automation: api, worker, beat, flower"
RUN groupadd --system --gid 10001 atom \
 && useradd --system --uid 10001 --gid atom --home-dir /var/lib/atom --create-home \
        --shell /usr/sbin/nologin atom
COPY --from=build /opt/atom /opt/atom
ENV PATH=/opt/atom/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ATOM_DATA_DIR=/var/lib/atom \
    PYTHON_API_PORT=5058 \
    FLOWER_PORT=5555
WORKDIR /var/lib/atom
USER 10001:10001
EXPOSE 5058 5555
# Checks whichever process this container runs (PID 1's command: api, worker, beat, flower).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["atom", "health"]
ENTRYPOINT ["atom"]
CMD ["api", "--host", "0.0.0.0"]
