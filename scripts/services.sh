#!/usr/bin/env bash
# Start/stop the real servers tidegate's tests talk to, all on 127.0.0.1:
#   postgres  PostgreSQL 15 + wal2json (wal_level=logical)   :5432
#   redis     Redis                                           :6379
#   mariadb   MariaDB (binlog on, ROW format)                 :3306
#   kafka     Apache Kafka 4.x, single KRaft node             :9092 (controller :9093)
#
# Usage: scripts/services.sh up|down|status|restart|env [SERVICE...]
#   SERVICE: postgres (pg), redis, mariadb (mysql), kafka. Default: all four.
#   up      installs what is missing (Debian packages; Kafka jars from Maven
#           Central), starts what is not running, waits until each answers,
#           prints a summary on stderr and `export TIDEGATE_...=...` lines on
#           stdout (so `eval "$(scripts/services.sh up)"` works).
#   down    stops them (idempotent).
#   status  one line per service; exit code 1 if any is down.
#   env     only print the export lines.
#
# Environment:
#   TIDEGATE_SERVICES_DIR  runtime state: data, logs, pids (default: $REPO/.services, or /var/tmp/tidegate-services
#                          when the repo sits where the postgres user cannot reach)
#   TIDEGATE_CACHE_DIR     download cache, Kafka jars (default: ~/.cache/tidegate)
#   TIDEGATE_PG_PORT TIDEGATE_REDIS_PORT TIDEGATE_MYSQL_PORT
#   TIDEGATE_KAFKA_PORT TIDEGATE_KAFKA_CONTROLLER_PORT
#   TIDEGATE_KAFKA_HEAP    broker -Xmx (default 512m)
#
# Meant for test machines (Debian 12, run as root). Authentication is trust /
# fixed passwords; never point it at anything but loopback.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# The servers run as the postgres and mysql users, who must reach the state dir: keep it
# in the repo when every parent folder is world-searchable, else under /var/tmp.
searchable_by_all() {
  local dir=$1
  while [[ -n $dir && $dir != / ]]; do
    [[ $(( 8#$(stat -c %a "$dir") & 1 )) -eq 1 ]] || return 1
    dir=$(dirname "$dir")
  done
}
if searchable_by_all "$REPO"; then DEFAULT_STATE=$REPO/.services
else DEFAULT_STATE=/var/tmp/tidegate-services; fi
STATE=${TIDEGATE_SERVICES_DIR:-$DEFAULT_STATE}
CACHE=${TIDEGATE_CACHE_DIR:-${HOME:-/root}/.cache/tidegate}
PG_PORT=${TIDEGATE_PG_PORT:-5432}
REDIS_PORT=${TIDEGATE_REDIS_PORT:-6379}
MYSQL_PORT=${TIDEGATE_MYSQL_PORT:-3306}
KAFKA_PORT=${TIDEGATE_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${TIDEGATE_KAFKA_CONTROLLER_PORT:-9093}
KAFKA_HEAP=${TIDEGATE_KAFKA_HEAP:-512m}
HOST=127.0.0.1

PG_VERSION=15
PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
KAFKA_POM=$SCRIPT_DIR/kafka/pom.xml
KAFKA_LOG4J=$SCRIPT_DIR/kafka/log4j2.properties
KAFKA_LIBS=$CACHE/kafka/libs
# Flags for the short-lived Kafka CLI JVMs (start fast, small heap).
KAFKA_TOOL_JVM=(-Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto
                -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dtidegate.kafka.loglevel=ERROR)

ALL_SERVICES=(postgres redis mariadb kafka)
declare -A EXTERNAL=()   # services served by a server not started from $STATE

# ---------------------------------------------------------------- helpers ---
log()  { printf '[services] %s\n' "$*" >&2; }
die()  { printf '[services] ERROR: %s\n' "$*" >&2; exit 1; }
# die_log SERVICE LOGFILE MESSAGE: fail, showing the tail of the service's log.
die_log() {
  printf '[services] ERROR: %s: %s\n' "$1" "$3" >&2
  if [[ -s $2 ]]; then
    printf '[services] ---- last lines of %s ----\n' "$2" >&2
    tail -n 40 "$2" >&2 || true
    printf '[services] ----\n' >&2
  fi
  exit 1
}

is_root() { [[ $EUID -eq 0 ]]; }
# as USER CMD...: run CMD as USER when we are root, else as ourselves.
as() { local u=$1; shift; if is_root; then runuser -u "$u" -- "$@"; else "$@"; fi; }

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }

pid_alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }
read_pid() { if [[ -s $1 ]]; then tr -dc '0-9' < "$1"; fi; }
# pid_matches PID PATTERN: process PID exists and its command line contains PATTERN.
pid_matches() {
  pid_alive "$1" || return 1
  tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null | grep -q -- "$2"
}

# find_pid PATTERN: first process whose command line contains PATTERN.
find_pid() {
  local f pid
  for f in /proc/[0-9]*/cmdline; do
    pid=${f#/proc/}; pid=${pid%/cmdline}
    if tr '\0' ' ' < "$f" 2>/dev/null | grep -q -- "$1"; then echo "$pid"; return 0; fi
  done
  return 1
}

# wait_pid_gone PID SECONDS
wait_pid_gone() {
  local pid=$1 end=$((SECONDS + $2))
  while pid_alive "$pid"; do
    ((SECONDS < end)) || return 1
    sleep 0.2
  done
}

# Unix sockets are limited to ~107 bytes; fall back to /tmp for deep paths.
socket_dir() {  # socket_dir NAME
  local d=$STATE/$1/run
  if ((${#d} > 80)); then
    d=/tmp/tidegate-$(printf '%s' "$STATE" | sha1sum | cut -c1-10)-$1
  fi
  printf '%s' "$d"
}

# ------------------------------------------------------------ packages ------
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_CREATED=0
cleanup() {
  if ((POLICY_RC_CREATED)); then rm -f "$POLICY_RC"; POLICY_RC_CREATED=0; fi
}
trap cleanup EXIT

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# apt_install PKG...: install the missing ones without letting their init
# scripts start system-wide daemons (policy-rc.d exit 101).
apt_install() {
  local missing=() p
  for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
  ((${#missing[@]})) || return 0
  is_root || die "missing Debian packages: ${missing[*]} (run as root, or install them)"
  log "installing Debian packages: ${missing[*]}"
  if [[ ! -e $POLICY_RC ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$POLICY_RC"
    chmod 755 "$POLICY_RC"
    POLICY_RC_CREATED=1
  fi
  local aptlog=$STATE/logs/apt.log
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } \
    > "$aptlog" 2>&1 || die_log apt "$aptlog" "apt-get install ${missing[*]} failed"
  cleanup
}

packages_for() {
  case $1 in
    postgres) echo "postgresql-$PG_VERSION postgresql-client-$PG_VERSION postgresql-$PG_VERSION-wal2json" ;;
    redis)    echo "redis-server redis-tools" ;;
    mariadb)  echo "mariadb-server mariadb-client" ;;
    kafka)
      local p=""
      command -v java >/dev/null || p+=" openjdk-17-jre-headless"
      command -v mvn  >/dev/null || p+=" maven"
      echo "$p" ;;
  esac
}

# ============================================================ PostgreSQL ===
PG_DIR=$STATE/postgres
PG_DATA=$PG_DIR/data
PG_LOG=$STATE/logs/postgres.log
PG_SOCK=$(socket_dir postgres)

pg_ours() { [[ -f $PG_DATA/PG_VERSION ]] && as postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }
pg_answers() { "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -t 2; }
pg_psql() {  # pg_psql [psql args...]
  "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U postgres "$@"
}
pg_wal2json_ok() {
  # As tidegate (so it also proves the role/database exist). Temporary slot:
  # dropped at session end even if the DROP is never reached.
  "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U tidegate -d tidegate -c "SET statement_timeout = '15s';" \
    -c "SELECT 1 FROM pg_create_logical_replication_slot('tidegate_probe_' || pg_backend_pid(), 'wal2json', true);" \
    -c "SELECT pg_drop_replication_slot('tidegate_probe_' || pg_backend_pid());" >/dev/null 2>&1
}
pg_check() { pg_ours && pg_answers; }
pg_external_ok() { pg_answers && pg_wal2json_ok; }

# pg_take_port: returns 0 when the port is free for us, 1 when a compatible
# server not started from $STATE answers there (we then use it); else dies.
pg_take_port() {
  port_open "$PG_PORT" || return 0
  # A Debian system cluster (pg_ctlcluster) on our port: stop it.
  if command -v pg_lsclusters >/dev/null; then
    local ver name port status
    while read -r ver name port status _; do
      if [[ $port == "$PG_PORT" && $status == online* ]]; then
        log "postgres: stopping Debian system cluster $ver/$name on port $port"
        pg_ctlcluster "$ver" "$name" stop || true
      fi
    done < <(pg_lsclusters -h 2>/dev/null || true)
  fi
  sleep 0.3
  port_open "$PG_PORT" || return 0
  pg_external_ok && return 1
  die "postgres: port $PG_PORT is taken by a server that is not ours (state dir $PG_DIR) and lacks tidegate/wal2json; stop it or set TIDEGATE_PG_PORT"
}

pg_up() {
  if pg_check; then
    pg_wal2json_ok || die_log postgres "$PG_LOG" "running, but wal2json slot probe failed"
    log "postgres: already running on $HOST:$PG_PORT"
    return 0
  fi
  if ! pg_take_port; then log "postgres: $(external_msg "$PG_PORT")"; EXTERNAL[postgres]=1; return 0; fi
  [[ -x $PG_BIN/postgres ]] || die "postgres: $PG_BIN/postgres not found"
  [[ -f $($PG_BIN/pg_config --pkglibdir)/wal2json.so ]] || die "postgres: wal2json.so missing (postgresql-$PG_VERSION-wal2json)"
  mkdir -p "$PG_DIR" "$PG_SOCK"
  if is_root; then chown postgres:postgres "$PG_DIR" "$PG_SOCK"; fi
  chmod 700 "$PG_DIR"
  as postgres test -w "$PG_DIR" ||
    die "postgres: the postgres user cannot write $PG_DIR (a parent directory is not searchable?); set TIDEGATE_SERVICES_DIR to e.g. /var/tmp/tidegate-services"

  if [[ ! -f $PG_DATA/PG_VERSION ]]; then
    log "postgres: initdb $PG_DATA"
    rm -rf "$PG_DATA"
    as postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust \
      --encoding=UTF8 --locale=C.UTF-8 > "$STATE/logs/postgres-initdb.log" 2>&1 ||
      die_log postgres "$STATE/logs/postgres-initdb.log" "initdb failed"
    echo "include = 'tidegate.conf'" >> "$PG_DATA/postgresql.conf"
    as postgres tee "$PG_DATA/pg_hba.conf" >/dev/null <<'EOF'
# Written by scripts/services.sh: test cluster, trust everything local.
# TYPE  DATABASE        USER  ADDRESS        METHOD
local   all             all                  trust
host    all             all   127.0.0.1/32   trust
host    all             all   ::1/128        trust
local   replication     all                  trust
host    replication     all   127.0.0.1/32   trust
host    replication     all   ::1/128        trust
EOF
  fi
  # Regenerated every start so a changed port takes effect.
  as postgres tee "$PG_DATA/tidegate.conf" >/dev/null <<EOF
# Written by scripts/services.sh on every start; do not edit.
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
logging_collector = off
log_min_messages = warning
EOF
  touch "$PG_LOG"; if is_root; then chown postgres:postgres "$PG_LOG"; fi
  log "postgres: starting on $HOST:$PG_PORT"
  as postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 -s start 8>&- 9>&- ||
    die_log postgres "$PG_LOG" "pg_ctl start failed"
  local end=$((SECONDS + 30))
  until pg_answers; do
    ((SECONDS < end)) || die_log postgres "$PG_LOG" "not answering on $HOST:$PG_PORT"
    sleep 0.3
  done
  pg_psql -d postgres > /dev/null 2> "$STATE/logs/postgres-bootstrap.log" <<'EOF' ||
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tidegate') THEN
    CREATE ROLE tidegate;
  END IF;
END $$;
ALTER ROLE tidegate WITH LOGIN SUPERUSER REPLICATION PASSWORD 'tidegate';
SELECT 'CREATE DATABASE tidegate OWNER tidegate'
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'tidegate') \gexec
EOF
    die_log postgres "$STATE/logs/postgres-bootstrap.log" "creating role/database tidegate failed"
  pg_wal2json_ok || die_log postgres "$PG_LOG" "wal2json slot probe failed"
}

pg_down() {
  if [[ -f $PG_DATA/PG_VERSION ]] && pg_ours; then
    log "postgres: stopping"
    as postgres "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 -s stop ||
      die_log postgres "$PG_LOG" "pg_ctl stop failed"
  else
    log "postgres: not running (from $STATE)"
  fi
}

# ================================================================= Redis ===
REDIS_DIR=$STATE/redis
REDIS_CONF=$REDIS_DIR/redis.conf
REDIS_PID=$REDIS_DIR/redis.pid
REDIS_LOG=$STATE/logs/redis.log

redis_cli() { redis-cli -h "$HOST" -p "$REDIS_PORT" "$@"; }
redis_ours() { pid_matches "$(read_pid "$REDIS_PID")" redis-server; }
redis_answers() { [[ $(timeout 3 redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }
redis_check() { redis_ours && redis_answers; }

redis_up() {
  if redis_check; then log "redis: already running on $HOST:$REDIS_PORT"; return 0; fi
  if port_open "$REDIS_PORT"; then
    if pid_alive "$(read_pid /run/redis/redis-server.pid)"; then
      log "redis: port $REDIS_PORT busy, stopping the Debian system redis-server"
      service redis-server stop >/dev/null 2>&1 || kill "$(read_pid /run/redis/redis-server.pid)" 2>/dev/null || true
      sleep 0.5
    fi
    if port_open "$REDIS_PORT"; then
      redis_answers || die "redis: port $REDIS_PORT is taken by something that is not redis; stop it or set TIDEGATE_REDIS_PORT"
      log "redis: $(external_msg "$REDIS_PORT")"
      EXTERNAL[redis]=1
      return 0
    fi
  fi
  mkdir -p "$REDIS_DIR"
  cat > "$REDIS_CONF" <<EOF
# Written by scripts/services.sh on every start; do not edit.
bind $HOST
port $REDIS_PORT
protected-mode yes
daemonize yes
supervised no
pidfile $REDIS_PID
logfile $REDIS_LOG
loglevel notice
dir $REDIS_DIR
save ""
appendonly no
databases 16
EOF
  log "redis: starting on $HOST:$REDIS_PORT"
  rm -f "$REDIS_PID"
  redis-server "$REDIS_CONF" >> "$REDIS_LOG" 2>&1 8>&- 9>&- || die_log redis "$REDIS_LOG" "redis-server failed to start"
  local end=$((SECONDS + 30))
  until redis_check; do
    ((SECONDS < end)) || die_log redis "$REDIS_LOG" "not answering on $HOST:$REDIS_PORT"
    sleep 0.2
  done
}

redis_down() {
  local pid; pid=$(read_pid "$REDIS_PID")
  if pid_matches "$pid" redis-server; then
    log "redis: stopping"
    redis_cli shutdown nosave >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" 20 || { kill -9 "$pid" 2>/dev/null || true; }
  else
    log "redis: not running (from $STATE)"
  fi
  rm -f "$REDIS_PID"
}

# =============================================================== MariaDB ===
MY_DIR=$STATE/mariadb
MY_DATA=$MY_DIR/data
MY_SOCK_DIR=$(socket_dir mariadb)
MY_SOCK=$MY_SOCK_DIR/mysqld.sock
MY_PID=$MY_DIR/mysqld.pid
MY_CNF=$MY_DIR/my.cnf
MY_LOG=$STATE/logs/mariadb.log

my_admin() { mariadb-admin --defaults-file="$MY_CNF" -uroot "$@"; }
my_ours() { pid_matches "$(read_pid "$MY_PID")" mariadbd; }
my_answers() { my_admin --connect-timeout=2 ping >/dev/null 2>&1 &&
               mariadb-admin -h "$HOST" -P "$MYSQL_PORT" -u tidegate -ptidegate --connect-timeout=2 ping >/dev/null 2>&1; }
my_check() { [[ -f $MY_CNF ]] && my_ours && my_answers; }
my_external_ok() {
  mariadb -h "$HOST" -P "$MYSQL_PORT" -u tidegate -ptidegate --connect-timeout=2 -e 'SELECT 1' tidegate >/dev/null 2>&1
}

my_write_cnf() {
  local user_line=""
  is_root && user_line="user = mysql"
  cat > "$MY_CNF" <<EOF
# Written by scripts/services.sh on every start; do not edit.
[mysqld]
$user_line
datadir = $MY_DATA
socket = $MY_SOCK
pid-file = $MY_PID
port = $MYSQL_PORT
bind-address = $HOST
log-error = $MY_LOG
skip-name-resolve
character-set-server = utf8mb4
collation-server = utf8mb4_general_ci
innodb_buffer_pool_size = 128M
innodb_flush_log_at_trx_commit = 2
max_connections = 200
# binlog for CDC-style tests
server-id = 1
log-bin = mysql-bin
binlog_format = ROW
binlog_row_image = FULL
expire_logs_days = 1

[client]
socket = $MY_SOCK
port = $MYSQL_PORT
EOF
}

my_up() {
  if my_check; then log "mariadb: already running on $HOST:$MYSQL_PORT"; return 0; fi
  if port_open "$MYSQL_PORT"; then
    local syspid; syspid=$(read_pid /run/mysqld/mysqld.pid)
    if pid_alive "$syspid"; then
      log "mariadb: port $MYSQL_PORT busy, stopping the Debian system mariadb"
      service mariadb stop >/dev/null 2>&1 || kill "$syspid" 2>/dev/null || true
      wait_pid_gone "$syspid" 30 || true
    fi
    if port_open "$MYSQL_PORT"; then
      my_external_ok || die "mariadb: port $MYSQL_PORT is taken by a server that is not ours and does not accept tidegate/tidegate; stop it or set TIDEGATE_MYSQL_PORT"
      log "mariadb: $(external_msg "$MYSQL_PORT")"
      EXTERNAL[mariadb]=1
      return 0
    fi
  fi
  command -v mariadbd >/dev/null || die "mariadb: mariadbd not found"
  mkdir -p "$MY_DIR" "$MY_SOCK_DIR"
  my_write_cnf
  if is_root; then chown mysql:mysql "$MY_DIR" "$MY_SOCK_DIR"; fi
  touch "$MY_LOG"; if is_root; then chown mysql:mysql "$MY_LOG"; fi
  as mysql test -w "$MY_DIR" ||
    die "mariadb: the mysql user cannot write $MY_DIR (a parent directory is not searchable?); set TIDEGATE_SERVICES_DIR to e.g. /var/tmp/tidegate-services"

  if [[ ! -f $MY_DATA/.tidegate-initialized ]]; then
    log "mariadb: mariadb-install-db $MY_DATA"
    rm -rf "$MY_DATA"
    local args=(--defaults-file="$MY_CNF" --datadir="$MY_DATA" --skip-test-db
                --auth-root-authentication-method=socket)
    is_root && args+=(--user=mysql)
    mariadb-install-db "${args[@]}" > "$STATE/logs/mariadb-install-db.log" 2>&1 ||
      die_log mariadb "$STATE/logs/mariadb-install-db.log" "mariadb-install-db failed"
    touch "$MY_DATA/.tidegate-initialized"
  fi

  log "mariadb: starting on $HOST:$MYSQL_PORT"
  rm -f "$MY_PID"
  setsid nohup mariadbd --defaults-file="$MY_CNF" < /dev/null >> "$MY_LOG" 2>&1 8>&- 9>&- &
  local launcher=$! end=$((SECONDS + 60))
  until my_admin --connect-timeout=2 ping >/dev/null 2>&1; do
    pid_alive "$launcher" || pid_alive "$(read_pid "$MY_PID")" || find_pid "mariadbd --defaults-file=$MY_CNF" >/dev/null ||
      die_log mariadb "$MY_LOG" "mariadbd exited during startup"
    ((SECONDS < end)) || die_log mariadb "$MY_LOG" "not answering on $MY_SOCK"
    sleep 0.3
  done
  end=$((SECONDS + 10))
  until [[ -s $MY_PID ]]; do ((SECONDS < end)) || die_log mariadb "$MY_LOG" "no pid file $MY_PID"; sleep 0.2; done
  mariadb --defaults-file="$MY_CNF" -uroot > /dev/null 2> "$STATE/logs/mariadb-bootstrap.log" <<'EOF' ||
CREATE DATABASE IF NOT EXISTS tidegate CHARACTER SET utf8mb4;
CREATE USER IF NOT EXISTS 'tidegate'@'127.0.0.1' IDENTIFIED BY 'tidegate';
CREATE USER IF NOT EXISTS 'tidegate'@'localhost' IDENTIFIED BY 'tidegate';
ALTER USER 'tidegate'@'127.0.0.1' IDENTIFIED BY 'tidegate';
ALTER USER 'tidegate'@'localhost' IDENTIFIED BY 'tidegate';
GRANT ALL PRIVILEGES ON *.* TO 'tidegate'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'tidegate'@'localhost' WITH GRANT OPTION;
FLUSH PRIVILEGES;
EOF
    die_log mariadb "$STATE/logs/mariadb-bootstrap.log" "creating database/user tidegate failed"
  my_answers || die_log mariadb "$MY_LOG" "not answering on $HOST:$MYSQL_PORT as tidegate"
}

my_down() {
  local pid; pid=$(read_pid "$MY_PID")
  if pid_matches "$pid" mariadbd; then
    log "mariadb: stopping"
    my_admin shutdown >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" 60 || { log "mariadb: did not stop in 60 s, killing"; kill -9 "$pid" 2>/dev/null || true; }
  else
    log "mariadb: not running (from $STATE)"
  fi
}

# ================================================================= Kafka ===
KAFKA_DIR=$STATE/kafka
KAFKA_PROPS=$KAFKA_DIR/server.properties
KAFKA_CLIENT_PROPS=$KAFKA_DIR/client.properties
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_PID=$KAFKA_DIR/kafka.pid
KAFKA_LOG=$STATE/logs/kafka.log

kafka_ours() { pid_matches "$(read_pid "$KAFKA_PID")" kafka.Kafka; }
kafka_tool() {  # kafka_tool CLASS ARGS...
  java "${KAFKA_TOOL_JVM[@]}" -cp "$KAFKA_LIBS/*" "$@"
}
kafka_answers() {
  port_open "$KAFKA_PORT" || return 1
  [[ -f $KAFKA_CLIENT_PROPS ]] || kafka_write_client_props || return 1
  timeout 20 java "${KAFKA_TOOL_JVM[@]}" -cp "$KAFKA_LIBS/*" org.apache.kafka.tools.BrokerApiVersionsCommand \
    --bootstrap-server "$HOST:$KAFKA_PORT" --command-config "$KAFKA_CLIENT_PROPS" >/dev/null 2>&1
}
kafka_check() { kafka_ours && kafka_answers; }

kafka_write_client_props() {
  mkdir -p "$KAFKA_DIR" && cat > "$KAFKA_CLIENT_PROPS" <<'EOF'
# Used by services.sh's readiness probe: fail fast instead of retrying 60 s.
request.timeout.ms=5000
default.api.timeout.ms=8000
EOF
}

kafka_libs() {
  local want; want=$(sha256sum "$KAFKA_POM" | cut -d' ' -f1)
  if [[ -f $KAFKA_LIBS/.complete && $(cat "$KAFKA_LIBS/.complete") == "$want" ]]; then return 0; fi
  mkdir -p "$CACHE/kafka"
  exec 8> "$CACHE/kafka/.lock"
  flock -w 900 8 || die "kafka: could not lock $CACHE/kafka/.lock"
  if [[ -f $KAFKA_LIBS/.complete && $(cat "$KAFKA_LIBS/.complete") == "$want" ]]; then exec 8>&-; return 0; fi
  log "kafka: resolving jars from Maven Central into $KAFKA_LIBS"
  local tmp=$CACHE/kafka/libs.tmp.$$ mlog=$STATE/logs/maven.log
  rm -rf "$tmp"
  mvn -B -q -Dstyle.color=never -f "$KAFKA_POM" dependency:copy-dependencies \
      -DoutputDirectory="$tmp" -DincludeScope=runtime > "$mlog" 2>&1 ||
    { rm -rf "$tmp"; die_log kafka "$mlog" "mvn dependency:copy-dependencies failed"; }
  ls "$tmp"/kafka_2.13-*.jar "$tmp"/kafka-tools-*.jar "$tmp"/log4j-slf4j-impl-*.jar >/dev/null 2>&1 ||
    { rm -rf "$tmp"; die "kafka: resolved jars are incomplete (see $mlog)"; }
  echo "$want" > "$tmp/.complete"
  rm -rf "$KAFKA_LIBS"
  mv "$tmp" "$KAFKA_LIBS"
  exec 8>&-
}

kafka_up() {
  command -v java >/dev/null || die "kafka: java not found"
  kafka_libs
  kafka_write_client_props
  if kafka_check; then log "kafka: already running on $HOST:$KAFKA_PORT"; return 0; fi
  cat > "$KAFKA_PROPS" <<EOF
# Written by scripts/services.sh on every start; do not edit.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=3
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.retention.hours=24
log.segment.bytes=16777216
EOF
  if port_open "$KAFKA_PORT"; then
    kafka_answers || die "kafka: port $KAFKA_PORT is taken by something that does not answer as a Kafka broker; stop it or set TIDEGATE_KAFKA_PORT"
    log "kafka: $(external_msg "$KAFKA_PORT")"
    EXTERNAL[kafka]=1
    return 0
  fi
  ! port_open "$KAFKA_CONTROLLER_PORT" || die "kafka: controller port $KAFKA_CONTROLLER_PORT is taken; stop that process or set TIDEGATE_KAFKA_CONTROLLER_PORT"
  if [[ ! -f $KAFKA_DATA/meta.properties ]]; then
    log "kafka: formatting KRaft storage $KAFKA_DATA"
    rm -rf "$KAFKA_DATA"
    local id; id=$(kafka_tool kafka.tools.StorageTool random-uuid 2>/dev/null) || die "kafka: StorageTool random-uuid failed"
    echo "$id" > "$KAFKA_DIR/cluster-id"
    kafka_tool kafka.tools.StorageTool format --standalone -t "$id" -c "$KAFKA_PROPS" \
      > "$STATE/logs/kafka-format.log" 2>&1 ||
      die_log kafka "$STATE/logs/kafka-format.log" "StorageTool format failed"
  fi
  log "kafka: starting on $HOST:$KAFKA_PORT"
  [[ -f $KAFKA_LOG ]] && mv -f "$KAFKA_LOG" "$KAFKA_LOG.1"
  (
    cd "$KAFKA_DIR"
    exec setsid nohup java -Xms256m "-Xmx$KAFKA_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -Djava.awt.headless=true -Dlog4j2.configurationFile="$KAFKA_LOG4J" \
      -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_PROPS" < /dev/null > "$KAFKA_LOG" 2>&1 8>&- 9>&-
  ) &
  local pid=$!
  # setsid forks when it happens to be a process-group leader: find the JVM then.
  sleep 0.3
  pid_matches "$pid" kafka.Kafka || pid=$(find_pid "kafka.Kafka $KAFKA_PROPS") || pid=$!
  echo "$pid" > "$KAFKA_PID"
  local end=$((SECONDS + 90))
  until kafka_answers; do
    pid_alive "$pid" || die_log kafka "$KAFKA_LOG" "broker exited during startup"
    ((SECONDS < end)) || die_log kafka "$KAFKA_LOG" "no metadata answer on $HOST:$KAFKA_PORT within 90 s"
    sleep 1
  done
}

kafka_down() {
  local pid; pid=$(read_pid "$KAFKA_PID")
  if pid_matches "$pid" kafka.Kafka; then
    log "kafka: stopping"
    kill "$pid" 2>/dev/null || true
    wait_pid_gone "$pid" 45 || { log "kafka: did not stop in 45 s, killing"; kill -9 "$pid" 2>/dev/null || true; wait_pid_gone "$pid" 10 || true; }
  else
    log "kafka: not running (from $STATE)"
  fi
  rm -f "$KAFKA_PID"
}

# ============================================================== commands ===
svc_port() {
  case $1 in
    postgres) echo "$PG_PORT" ;; redis) echo "$REDIS_PORT" ;;
    mariadb) echo "$MYSQL_PORT" ;; kafka) echo "$KAFKA_PORT" ;;
  esac
}
svc_check() {  # started from $STATE and answering
  case $1 in
    postgres) pg_check && pg_wal2json_ok ;;
    redis)    redis_check ;;
    mariadb)  my_check ;;
    kafka)    [[ -d $KAFKA_LIBS ]] && kafka_check ;;
  esac
}
svc_external() {  # something else answers on the port, good enough for tests
  case $1 in
    postgres) pg_external_ok ;;
    redis)    port_open "$REDIS_PORT" && redis_answers ;;
    mariadb)  my_external_ok ;;
    kafka)    [[ -d $KAFKA_LIBS ]] && kafka_answers ;;
  esac
}
external_msg() {
  printf 'using the compatible server already answering on %s:%s (not started from %s; down leaves it alone)' "$HOST" "$1" "$STATE"
}
svc_pid() {
  case $1 in
    postgres) head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null || true ;;
    redis)    read_pid "$REDIS_PID" ;;
    mariadb)  read_pid "$MY_PID" ;;
    kafka)    read_pid "$KAFKA_PID" ;;
  esac
}

print_env() {
  cat <<EOF
export TIDEGATE_PG_DSN=postgresql://tidegate:tidegate@$HOST:$PG_PORT/tidegate
export TIDEGATE_REDIS_URL=redis://$HOST:$REDIS_PORT/0
export TIDEGATE_MYSQL_DSN=mysql://tidegate:tidegate@$HOST:$MYSQL_PORT/tidegate
export TIDEGATE_KAFKA_BOOTSTRAP=$HOST:$KAFKA_PORT
EOF
}

line_up()   { printf '%-9s up    %s:%-5s pid %s\n' "$1" "$HOST" "$(svc_port "$1")" "$(svc_pid "$1")"; }
line_ext()  { printf '%-9s up    %s:%-5s external (not started from this state dir)\n' "$1" "$HOST" "$(svc_port "$1")"; }
line_down() { printf '%-9s down  %s:%s\n' "$1" "$HOST" "$(svc_port "$1")"; }

cmd_status() {
  local s rc=0
  for s in "$@"; do
    if svc_check "$s"; then line_up "$s"
    elif svc_external "$s"; then line_ext "$s"
    else line_down "$s"; rc=1; fi
  done
  return $rc
}

lock_state() {
  mkdir -p "$STATE/logs"
  # The daemons are started with fds 8/9 closed so they never inherit this lock.
  exec 9> "$STATE/.lock"
  if ! flock -n 9; then
    log "waiting for another services.sh (lock $STATE/.lock)"
    flock -w 600 9 || die "another services.sh holds $STATE/.lock for 10 min"
  fi
}

cmd_up() {
  lock_state
  local s p pkgs=() t0=$SECONDS
  for s in "$@"; do read -r -a p <<< "$(packages_for "$s")"; pkgs+=("${p[@]}"); done
  ((${#pkgs[@]} == 0)) || apt_install "${pkgs[@]}"
  for s in "$@"; do
    case $s in
      postgres) pg_up ;; redis) redis_up ;; mariadb) my_up ;; kafka) kafka_up ;;
    esac
  done
  # Each *_up above returns only once its service answered (or dies).
  print_env > "$STATE/env.sh"
  for s in "$@"; do
    if [[ -n ${EXTERNAL[$s]:-} ]]; then line_ext "$s"; else line_up "$s"; fi
  done >&2
  log "up in $((SECONDS - t0)) s; state in $STATE; env also in $STATE/env.sh"
  print_env
}

cmd_down() {
  lock_state
  local i
  # reverse order
  for ((i = $# ; i >= 1; i--)); do
    case ${!i} in
      postgres) pg_down ;; redis) redis_down ;; mariadb) my_down ;; kafka) kafka_down ;;
    esac
  done
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
  exit 2
}

main() {
  local cmd=${1:-}; [[ -n $cmd ]] || usage
  shift
  local svcs=() s
  for s in "$@"; do
    case $s in
      postgres|postgresql|pg) svcs+=(postgres) ;;
      redis) svcs+=(redis) ;;
      mariadb|mysql) svcs+=(mariadb) ;;
      kafka) svcs+=(kafka) ;;
      *) die "unknown service '$s' (known: ${ALL_SERVICES[*]})" ;;
    esac
  done
  ((${#svcs[@]})) || svcs=("${ALL_SERVICES[@]}")
  case $cmd in
    up|start) cmd_up "${svcs[@]}" ;;
    down|stop) cmd_down "${svcs[@]}" ;;
    restart) cmd_down "${svcs[@]}"; exec 9>&-; cmd_up "${svcs[@]}" ;;
    status) cmd_status "${svcs[@]}" ;;
    env) print_env ;;
    -h|--help|help) usage ;;
    *) usage ;;
  esac
}

main "$@"
