#!/bin/bash
# Licensed under the Apache License, Version 2.0.
#
# imc-entrypoint: the container's entry point. Turns the IMC_* variables
# into /run/imchallenge/env.conf (included by Apache), prepares the run
# directories and the spool, then runs Apache in the foreground as PID 1
# (SIGWINCH: graceful stop). With arguments, runs them instead, after the
# same preparation (e.g. `imc-entrypoint apache2ctl -t`).
#
#   IMC_PORT                       port to listen on (8080)
#   IMC_LISTEN_ADDRESS             address to listen on (all)
#   IMC_CLICKHOUSE_URL             ClickHouse HTTP URL(s), space-separated
#   IMC_CLICKHOUSE_USER            ClickHouse user
#   IMC_CLICKHOUSE_PASSWORD_FILE   file holding that user's password
#   IMC_DATABASE                   ClickHouse database (imchallenge)
#   IMC_CREATE_SCHEMA              On|Off: create the tables at start-up (On)
#   IMC_SPOOL_LIMIT, IMC_SPOOL_SYNC, IMC_BATCH_SIZE, IMC_BATCH_DELAY,
#   IMC_TIMEOUT                    the IMChallenge directives of those names
#   IMC_GRACEFUL_SHUTDOWN_TIMEOUT  seconds a graceful stop may take (20)
#   IMC_SERVER_NAME                ServerName (localhost)
#   IMC_LOG_LEVEL                  LogLevel (warn)
# Unset variables leave the module's defaults. A value that is not valid
# for its setting stops the container with a message naming the variable.
set -euo pipefail

conf_dir=/run/imchallenge
conf=$conf_dir/env.conf
spool=/var/spool/imchallenge

die() {
    echo "imc-entrypoint: $*" >&2
    exit 64
}

# check NAME REGEX: the variable, when set, must match REGEX entirely.
check() {
    local name=$1 re=$2 value
    value=${!name-}
    [ -z "$value" ] && return 0
    [[ $value =~ ^($re)$ ]] ||
        die "$name='$value' is not valid (expected: $3)"
}

url='https?://[][A-Za-z0-9._~:/?#@!$&()*+,;=%-]+'
duration='[0-9]+(ms|s|m)?'
size='[0-9]+[kMG]?'
check IMC_PORT '[0-9]{1,5}' "a port number"
check IMC_LISTEN_ADDRESS '[0-9A-Za-z.:-]+|\[[0-9A-Fa-f:.]+\]' "an address"
check IMC_CLICKHOUSE_URL "$url( +$url)*" "http(s) URLs, space-separated"
check IMC_CLICKHOUSE_USER '[A-Za-z0-9_.@-]+' "a user name"
check IMC_CLICKHOUSE_PASSWORD_FILE '/[A-Za-z0-9_./@+-]+' "an absolute path"
check IMC_DATABASE '[A-Za-z_][A-Za-z0-9_]*' "a database name"
check IMC_CREATE_SCHEMA '[Oo][Nn]|[Oo][Ff][Ff]' "On or Off"
check IMC_SPOOL_SYNC '[Oo][Nn]|[Oo][Ff][Ff]' "On or Off"
check IMC_SPOOL_LIMIT "$size" "a size such as 1G"
check IMC_BATCH_SIZE '[0-9]+' "a number"
check IMC_BATCH_DELAY "$duration" "a duration such as 1s"
check IMC_TIMEOUT "$duration" "a duration such as 10s"
check IMC_GRACEFUL_SHUTDOWN_TIMEOUT '[0-9]+' "seconds"
check IMC_SERVER_NAME '[A-Za-z0-9.-]+' "a host name"
check IMC_LOG_LEVEL '[a-z]+[0-9]?( +[a-z_]+:[a-z]+[0-9]?)*' "a LogLevel"

port=${IMC_PORT:-8080}
[ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "IMC_PORT=$port is out of range"
pwfile=${IMC_CLICKHOUSE_PASSWORD_FILE:-}
if [ -n "$pwfile" ] && [ ! -r "$pwfile" ]; then
    die "IMC_CLICKHOUSE_PASSWORD_FILE=$pwfile cannot be read"
fi

# Debian's Apache environment (run user, run and lock directories).
set +u
# shellcheck disable=SC1091
. /etc/apache2/envvars
set -u
mkdir -p "$conf_dir" "$APACHE_RUN_DIR" "$APACHE_LOCK_DIR" "$APACHE_LOG_DIR"

# directive NAME VARIABLE: "NAME value" when VARIABLE is set.
directive() {
    local value=${!2-}
    [ -n "$value" ] && printf '%s %s\n' "$1" "$value"
    return 0
}

listen=${IMC_LISTEN_ADDRESS:-}
case $listen in
*:*) case $listen in \[*) ;; *) listen="[$listen]" ;; esac ;;
esac

tmp=$(mktemp "$conf_dir/.env.conf.XXXXXX")
{
    echo "# Written by imc-entrypoint from the environment; do not edit."
    echo "Listen ${listen:+$listen:}$port"
    echo "ServerName ${IMC_SERVER_NAME:-localhost}"
    echo "GracefulShutdownTimeout ${IMC_GRACEFUL_SHUTDOWN_TIMEOUT:-20}"
    echo "LogLevel ${IMC_LOG_LEVEL:-warn}"
    echo "<IfModule imchallenge_module>"
    directive IMChallengeClickHouse IMC_CLICKHOUSE_URL
    directive IMChallengeClickHouseUser IMC_CLICKHOUSE_USER
    [ -n "$pwfile" ] && echo "IMChallengeClickHousePasswordFile \"$pwfile\""
    directive IMChallengeDatabase IMC_DATABASE
    directive IMChallengeCreateSchema IMC_CREATE_SCHEMA
    directive IMChallengeSpoolLimit IMC_SPOOL_LIMIT
    directive IMChallengeSpoolSync IMC_SPOOL_SYNC
    directive IMChallengeBatchSize IMC_BATCH_SIZE
    directive IMChallengeBatchDelay IMC_BATCH_DELAY
    directive IMChallengeTimeout IMC_TIMEOUT
    echo "IMChallengeSpoolDir $spool"
    echo "</IfModule>"
} >"$tmp"
chmod 644 "$tmp"
mv -f "$tmp" "$conf"

# The spool (a volume) belongs to the user Apache's children run as.
mkdir -p "$spool"
if [ "$(id -u)" = 0 ]; then
    chown "$APACHE_RUN_USER:$APACHE_RUN_GROUP" "$spool"
    chmod 750 "$spool"
fi

if [ $# -gt 0 ]; then
    exec "$@"
fi
# A stale pid file from a killed container would stop the start.
rm -f "$APACHE_PID_FILE"
exec /usr/sbin/apache2 -DFOREGROUND
