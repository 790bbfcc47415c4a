#!/usr/bin/env bash
# Deploy ATOM on this machine, and keep it deployed: running it again changes nothing.
#
#   ./deploy_enhanced_workflow_automation.sh --dry-run   # check prerequisites, show the plan
#   ./deploy_enhanced_workflow_automation.sh             # deploy (or confirm the deployment)
#   ./deploy_enhanced_workflow_automation.sh --down      # stop what it started
#
# Modes (--mode, default auto):
#   compose  Docker Compose (docker-compose.yml beside this script), where a Docker engine runs
#   systemd  a virtual environment and one systemd unit per process (atom-api, atom-worker,
#            atom-beat, atom-flower), where systemd runs and DATABASE_URL/REDIS_URL are given
#   native   a virtual environment and the processes supervised by `atom up` in the
#            background (embedded PostgreSQL and Redis unless DATABASE_URL/REDIS_URL are given)
#
# Options:
#   --home DIR       where the deployment lives: env file, data, logs, venv (default ~/.atom-deploy)
#   --venv DIR       use this virtual environment instead of creating DIR/venv (it must have ATOM)
#   --concurrency N  processes per step worker (default 8)
#   --scale N        step workers (compose: containers; default 1)
#   --timeout S      how long to wait for health (default 180)
#
# Secrets live in one env file, readable by its owner only: DIR/atom.env (native, systemd) or
# .env beside docker-compose.yml (compose). It is made on the first run, from the environment
# (DATABASE_URL, REDIS_URL, ATOM_SECRET_KEY, FLOWER_BASIC_AUTH, PYTHON_API_PORT, FLOWER_PORT,
# ATOM_HTTP_ALLOWLIST when set) and generated secrets; later runs keep it as it is.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
umask 077  # the env file, the admin key and the logs are the owner's only

# Internal: the background supervisor (native mode) is `atom up` with the env file's settings.
if [ "${1:-}" = --exec-atom-up ]; then
    env_file=$2 venv=$3 concurrency=$4 assignments=()
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in ''|'#'*) continue ;; *=*) assignments+=("$line") ;; esac
    done < "$env_file"
    exec env "${assignments[@]}" "$venv/bin/atom" up --concurrency "$concurrency"
fi
MODE=auto
DRY_RUN=0
DOWN=0
ATOM_HOME=${ATOM_HOME:-$HOME/.atom-deploy}
VENV=""
CONCURRENCY=8
SCALE=1
TIMEOUT=180
PYTHON=${PYTHON:-python3}

say() { printf '%s\n' "$*"; }
die() { printf 'deploy: %s\n' "$*" >&2; exit 1; }
step() { if [ "$DRY_RUN" = 1 ]; then say "  would: $*"; else say "==> $*"; fi; }

while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --down) DOWN=1 ;;
        --mode) MODE=${2:?--mode needs a value}; shift ;;
        --home) ATOM_HOME=${2:?--home needs a value}; shift ;;
        --venv) VENV=${2:?--venv needs a value}; shift ;;
        --concurrency) CONCURRENCY=${2:?}; shift ;;
        --scale) SCALE=${2:?}; shift ;;
        --timeout) TIMEOUT=${2:?}; shift ;;
        -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done
case "$MODE" in auto|compose|systemd|native) ;; *) die "--mode must be auto, compose, systemd or native" ;; esac
case "$ATOM_HOME" in /*) ;; *) ATOM_HOME=$PWD/$ATOM_HOME ;; esac
ENV_FILE=$ATOM_HOME/atom.env
DATA_DIR=$ATOM_HOME/data
LOG_DIR=$ATOM_HOME/logs
PID_FILE=$ATOM_HOME/atom-up.pid
ADMIN_KEY_FILE=$ATOM_HOME/admin-key
[ -n "$VENV" ] || VENV=$ATOM_HOME/venv

# ---- prerequisites ---------------------------------------------------------------------------
docker_ok() { command -v docker >/dev/null && docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; }
systemd_ok() {
    command -v systemctl >/dev/null || return 1
    case "$(systemctl is-system-running 2>/dev/null || true)" in running|degraded) return 0 ;; *) return 1 ;; esac
}
env_value() {  # NAME: its value from the env file, else from the environment
    local line
    if [ -f "$ENV_FILE" ] && line=$(grep -E "^$1=" "$ENV_FILE" | tail -1); then
        printf '%s' "${line#*=}"
    else
        printf '%s' "${!1:-}"
    fi
}

missing=()
if [ "$MODE" = auto ]; then
    if docker_ok; then MODE=compose
    elif systemd_ok && [ -n "$(env_value DATABASE_URL)" ] && [ -n "$(env_value REDIS_URL)" ]; then MODE=systemd
    else MODE=native
    fi
fi
if [ "$MODE" = compose ]; then
    command -v docker >/dev/null || missing+=("docker: install Docker Engine with the compose plugin")
    docker info >/dev/null 2>&1 || missing+=("a running Docker engine (docker info fails)")
    docker compose version >/dev/null 2>&1 || missing+=("the Docker Compose plugin (docker compose version fails)")
    ENV_FILE=$REPO/.env
else
    if [ -x "$VENV/bin/python" ]; then
        PY=$VENV/bin/python
    else
        PY=$(command -v "$PYTHON" || true)
        [ -n "$PY" ] || missing+=("python3 (3.11 or newer): apt-get install python3 python3-venv")
    fi
    if [ -n "${PY:-}" ]; then
        "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
            || missing+=("Python 3.11 or newer (found $("$PY" --version 2>&1))")
        [ -x "$VENV/bin/python" ] || "$PY" -c 'import venv, ensurepip' 2>/dev/null \
            || missing+=("the venv module: apt-get install python3-venv")
    fi
    if [ "$MODE" = systemd ]; then
        systemd_ok || missing+=("a running systemd (systemctl is-system-running)")
        [ "$(id -u)" = 0 ] || missing+=("root, to install systemd units (or use --mode native)")
        [ -n "$(env_value DATABASE_URL)" ] || missing+=("DATABASE_URL: systemd mode runs on your PostgreSQL")
        [ -n "$(env_value REDIS_URL)" ] || missing+=("REDIS_URL: systemd mode runs on your Redis")
    fi
fi
if [ ${#missing[@]} -gt 0 ]; then
    say "deploy: missing prerequisites for mode $MODE:" >&2
    for item in "${missing[@]}"; do say "  - $item" >&2; done
    [ "$DRY_RUN" = 1 ] && exit 1
    exit 1
fi

api_port() { local p; p=$(env_value PYTHON_API_PORT); printf '%s' "${p:-5058}"; }
flower_port() { local p; p=$(env_value FLOWER_PORT); printf '%s' "${p:-5555}"; }

# ---- the env file: made once, then left alone --------------------------------------------------
write_env_file() {
    local target=$1
    if [ -f "$target" ]; then
        step "keep $target (exists)"
        return
    fi
    step "create $target (secrets generated, mode 600)"
    [ "$DRY_RUN" = 1 ] && return
    local gen
    gen=$(command -v "${PY:-python3}" || command -v python3)
    umask 077
    {
        say "# ATOM deployment settings, made by $(basename "$0") on $(date -u +%FT%TZ)."
        say "# Edit and run the script again; the README's Configuration lists every variable."
        if [ "$MODE" = compose ]; then
            say "POSTGRES_PASSWORD=$("$gen" -c 'import secrets; print(secrets.token_hex(24))')"
            say "REDIS_PASSWORD=$("$gen" -c 'import secrets; print(secrets.token_hex(24))')"
        else
            say "ATOM_DATA_DIR=$DATA_DIR"
            say "PYTHON_API_PORT=${PYTHON_API_PORT:-5058}"
            say "FLOWER_PORT=${FLOWER_PORT:-5555}"
            for name in DATABASE_URL REDIS_URL ATOM_HTTP_ALLOWLIST ATOM_LOG_LEVEL MAX_PARALLEL_EXECUTIONS; do
                if [ -n "${!name:-}" ]; then say "$name=${!name}"; fi
            done
        fi
        say "ATOM_SECRET_KEY=${ATOM_SECRET_KEY:-$("$gen" -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())')}"
        say "FLOWER_BASIC_AUTH=${FLOWER_BASIC_AUTH:-admin:$("$gen" -c 'import secrets; print(secrets.token_urlsafe(18))')}"
    } > "$target"
    chmod 600 "$target"
}

# ---- the virtual environment: installed once per version of the dependencies ---------------
ensure_venv() {
    local want stamp=$VENV/.atom-deploy-installed
    want=$(cat "$REPO/pyproject.toml" "$REPO/constraints.txt" | sha256sum | cut -c1-64)
    if [ -x "$VENV/bin/atom" ] && { [ ! -f "$stamp" ] && [ "$VENV" != "$ATOM_HOME/venv" ] || [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; }; then
        step "keep virtual environment $VENV (up to date)"
        return
    fi
    step "install ATOM into $VENV (pip, pinned by constraints.txt)"
    [ "$DRY_RUN" = 1 ] && return
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c "$REPO/constraints.txt" "$REPO"
    echo "$want" > "$stamp"
}

# Run `atom ARGS` with the env file's settings (the file is not a shell script: read it as data).
atom_env() {
    local -a assignments=()
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in ''|'#'*) continue ;; *=*) assignments+=("$line") ;; esac
    done < "$ENV_FILE"
    env "${assignments[@]}" "$VENV/bin/atom" "$@"
}

health_json() {  # the API's health: its overall status, a space, the whole answer (or nothing)
    "${PY:-python3}" - "$1" <<'PYEOF' 2>/dev/null || true
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as answer:
        body = answer.read().decode()
except Exception as e:
    body = e.read().decode() if hasattr(e, "read") else ""
if body:
    print(json.loads(body).get("status"), body)
PYEOF
}

wait_for_health() {
    local url waited=0 body=""
    url="http://127.0.0.1:$(api_port)/api/workflows/monitoring/health"
    step "wait until $url says ok (at most ${TIMEOUT} s)"
    [ "$DRY_RUN" = 1 ] && return
    while [ "$waited" -lt "$TIMEOUT" ]; do
        body=$(health_json "$url")
        case "$body" in "ok "*) say "    healthy: ${body#ok }"; return ;; esac
        if [ -n "${SUPERVISOR_PID:-}" ] && ! kill -0 "$SUPERVISOR_PID" 2>/dev/null; then
            tail -n 30 "$LOG_DIR/atom-up.log" >&2 || true
            die "atom up exited (log: $LOG_DIR/atom-up.log)"
        fi
        sleep 2; waited=$((waited + 2))
    done
    die "not healthy after ${TIMEOUT} s; last answer: ${body:-none}"
}

running_pid() {  # the supervisor's pid when it is alive, else nothing
    local pid
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 0
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -q "atom" "/proc/$pid/cmdline" 2>/dev/null; then
        printf '%s' "$pid"
    fi
}

# ---- native: `atom up` in the background ----------------------------------------------------
deploy_native() {
    [ "$DRY_RUN" = 1 ] || mkdir -p "$LOG_DIR" "$DATA_DIR"
    write_env_file "$ENV_FILE"
    ensure_venv
    if [ -n "$(env_value DATABASE_URL)" ]; then
        step "migrate the database (atom db upgrade)"
        [ "$DRY_RUN" = 1 ] || atom_env db upgrade
    else
        step "migrations run by atom up on its embedded PostgreSQL under $DATA_DIR"
    fi
    local pid
    pid=$(running_pid)
    if [ -n "$pid" ]; then
        step "keep the running processes (atom up, pid $pid)"
        SUPERVISOR_PID=$pid
    else
        step "start API, worker (concurrency $CONCURRENCY), beat and Flower under atom up (log $LOG_DIR/atom-up.log)"
        if [ "$DRY_RUN" = 0 ]; then
            # setsid: its own session, so it outlives this shell; atom up stops its children.
            ( cd "$ATOM_HOME" && exec setsid "$BASH" "$REPO/$(basename "$0")" --exec-atom-up \
                "$ENV_FILE" "$VENV" "$CONCURRENCY" >>"$LOG_DIR/atom-up.log" 2>&1 < /dev/null ) &
            SUPERVISOR_PID=$!
            echo "$SUPERVISOR_PID" > "$PID_FILE"
        fi
    fi
    wait_for_health
    ADMIN_KEY_FILE=$DATA_DIR/dev-admin-key  # made by atom up on its first start
}

# ---- systemd: one unit per process ----------------------------------------------------------
unit() {  # NAME DESCRIPTION ARGS...
    local name=$1 description=$2; shift 2
    cat <<EOF
[Unit]
Description=ATOM $description
After=network-online.target
Wants=network-online.target

[Service]
EnvironmentFile=$ENV_FILE
WorkingDirectory=$ATOM_HOME
ExecStart=$VENV/bin/atom $*
Restart=always
RestartSec=3
KillMode=mixed
TimeoutStopSec=60

[Install]
WantedBy=multi-user.target
EOF
}

deploy_systemd() {
    [ "$DRY_RUN" = 1 ] || mkdir -p "$LOG_DIR" "$DATA_DIR"
    write_env_file "$ENV_FILE"
    ensure_venv
    step "migrate the database (atom db upgrade)"
    [ "$DRY_RUN" = 1 ] || atom_env db upgrade
    local changed=0 name
    for name in api worker beat flower; do
        local file=/etc/systemd/system/atom-$name.service content
        case $name in
            api) content=$(unit api "API" api --host 127.0.0.1) ;;
            worker) content=$(unit worker "step worker" worker --concurrency "$CONCURRENCY") ;;
            beat) content=$(unit beat "scheduler (one per installation)" beat) ;;
            flower) content=$(unit flower "Flower" flower) ;;
        esac
        if [ -f "$file" ] && [ "$(cat "$file")" = "$content" ]; then
            step "keep $file (unchanged)"
        else
            step "write $file"; changed=1
            [ "$DRY_RUN" = 1 ] || printf '%s\n' "$content" > "$file"
        fi
    done
    if [ "$changed" = 1 ]; then
        step "systemctl daemon-reload and restart the changed units"
        [ "$DRY_RUN" = 1 ] || { systemctl daemon-reload; systemctl enable atom-{api,worker,beat,flower}.service; systemctl restart atom-{api,worker,beat,flower}.service; }
    else
        step "systemctl start atom-api atom-worker atom-beat atom-flower (no-op when running)"
        [ "$DRY_RUN" = 1 ] || systemctl start atom-{api,worker,beat,flower}.service
    fi
    wait_for_health
    ensure_admin_key
}

ensure_admin_key() {
    if [ -s "$ADMIN_KEY_FILE" ]; then
        step "keep the admin key in $ADMIN_KEY_FILE"
        return
    fi
    step "create an admin key for tenant 'default' in $ADMIN_KEY_FILE (mode 600)"
    [ "$DRY_RUN" = 1 ] && return
    local key
    if [ "$MODE" = compose ]; then
        key=$(docker compose -f "$REPO/docker-compose.yml" run --rm --no-deps migrate \
            keys create --tenant default --role admin --name deploy | tail -n 1)
    else
        key=$(atom_env keys create --tenant default --role admin --name deploy | tail -n 1)
    fi
    ( umask 077; printf '%s\n' "$key" > "$ADMIN_KEY_FILE" )
}

# ---- compose ---------------------------------------------------------------------------------
deploy_compose() {
    [ "$DRY_RUN" = 1 ] || mkdir -p "$ATOM_HOME"
    write_env_file "$ENV_FILE"
    step "docker compose up -d --build --wait --scale worker=$SCALE (migrations run first, once)"
    [ "$DRY_RUN" = 1 ] || docker compose -f "$REPO/docker-compose.yml" --env-file "$ENV_FILE" \
        up -d --build --wait --scale "worker=$SCALE"
    wait_for_health
    ensure_admin_key
}

down() {
    case "$MODE" in
        compose) step "docker compose down (volumes kept)"; [ "$DRY_RUN" = 1 ] || docker compose -f "$REPO/docker-compose.yml" down ;;
        systemd) step "systemctl stop atom-api atom-worker atom-beat atom-flower"; [ "$DRY_RUN" = 1 ] || systemctl stop atom-{api,worker,beat,flower}.service ;;
        native)
            local pid; pid=$(running_pid)
            if [ -z "$pid" ]; then say "deploy: nothing running"; return; fi
            step "stop atom up (pid $pid) and everything it runs"
            [ "$DRY_RUN" = 1 ] && return
            kill -TERM "$pid"
            for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
            rm -f "$PID_FILE"
            say "deploy: stopped" ;;
    esac
}

if [ "$DOWN" = 1 ]; then down; exit 0; fi

say "ATOM deployment: mode $MODE, home $ATOM_HOME$([ "$DRY_RUN" = 1 ] && printf ' (dry run: nothing is changed)')"
case "$MODE" in
    compose) deploy_compose ;;
    systemd) deploy_systemd ;;
    native) deploy_native ;;
esac

[ "$DRY_RUN" = 1 ] && exit 0
say ""
say "ATOM is running:"
say "  API        http://127.0.0.1:$(api_port)/api   (docs: http://127.0.0.1:$(api_port)/api/docs)"
say "  Health     http://127.0.0.1:$(api_port)/api/workflows/monitoring/health"
say "  Flower     http://127.0.0.1:$(flower_port)   (login: FLOWER_BASIC_AUTH in $ENV_FILE)"
say "  Admin key  in $ADMIN_KEY_FILE"
say "  Settings   $ENV_FILE"
