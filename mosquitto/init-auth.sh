#!/bin/sh
# Creates the broker's password file and ACL copy: the `mosquitto-init` step of
# docker-compose.yml (run in the eclipse-mosquitto image, before the broker).
#
# Passwords come from the environment, one variable per MQTT user:
#     WATTCAST_PASSWORD_SIMULATOR, WATTCAST_PASSWORD_PREDICTOR_LSTM, ...,
#     WATTCAST_PASSWORD_COLLECTOR, WATTCAST_PASSWORD_VIEWER
# (docker compose reads them from the untracked file .env; create it with
# `wattcast broker passwd --env-file .env`, see mosquitto/README.md).
# A missing or empty one is an error: the broker then does not start.
# The `healthcheck` user gets a new random password at every start, written to
# $WATTCAST_AUTH_DIR/healthcheck.password for the broker's own healthcheck.
#
# Writes (mode 600, owner mosquitto when that user exists):
#     $WATTCAST_AUTH_DIR/passwd   $WATTCAST_AUTH_DIR/acl   $WATTCAST_AUTH_DIR/healthcheck.password
# WATTCAST_AUTH_DIR defaults to /mosquitto/auth; the ACL is copied from the folder
# of this script.  Needs mosquitto_passwd (part of the mosquitto image).
#
# Models of your own (docs/your-own-model.md): WATTCAST_EXTRA_MODELS="mine other" adds, per
# model, the user predictor-<model> (password WATTCAST_PASSWORD_PREDICTOR_<MODEL>) and its ACL
# lines: it may publish wattcast/v1/+/forecast/<model> only (wattcast.credentials.predictor_acl).
set -eu

users="simulator predictor-lstm predictor-lstm-augmented predictor-gbm predictor-gbm-history predictor-rls predictor-linear predictor-persistence collector viewer dashboard homeassistant"
extra_models="$(echo "${WATTCAST_EXTRA_MODELS:-}" | tr ',' ' ')"
for model in $extra_models; do
    case "$model" in
        *[!A-Za-z0-9_.-]* | [!A-Za-z0-9]*)
            echo "mosquitto-init: error: WATTCAST_EXTRA_MODELS: not a model name: $model" >&2
            exit 1 ;;
    esac
    users="$users predictor-$model"
done
auth_dir="${WATTCAST_AUTH_DIR:-/mosquitto/auth}"
src_dir="$(cd "$(dirname "$0")" && pwd)"

umask 077
mkdir -p "$auth_dir"
new="$auth_dir/passwd.new"
rm -f "$new"
: > "$new"

missing=""
for user in $users; do
    var="WATTCAST_PASSWORD_$(echo "$user" | tr 'a-z-' 'A-Z_')"
    eval "password=\${$var:-}"
    if [ -z "$password" ]; then
        missing="$missing $var"
        continue
    fi
    mosquitto_passwd -b "$new" "$user" "$password"
done
if [ -n "$missing" ]; then
    rm -f "$new"
    echo "mosquitto-init: error: no password for:$missing" >&2
    echo "mosquitto-init: create them with 'wattcast broker passwd --env-file .env' (see mosquitto/README.md)" >&2
    exit 1
fi

healthcheck="$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
mosquitto_passwd -b "$new" healthcheck "$healthcheck"
printf '%s\n' "$healthcheck" > "$auth_dir/healthcheck.password"
cp "$src_dir/acl" "$auth_dir/acl.new"
for model in $extra_models; do
    printf '\n# --- %s: a model of this deployment'"'"'s own (declared, not built in)\nuser predictor-%s\ntopic read wattcast/v1/+/reading\ntopic read wattcast/v1/+/end\ntopic write wattcast/v1/+/forecast/%s\ntopic readwrite wattcast/v1/status/predictor-%s\n' \
        "$model" "$model" "$model" "$model" >> "$auth_dir/acl.new"
done
mv "$new" "$auth_dir/passwd"
mv "$auth_dir/acl.new" "$auth_dir/acl"
chmod 600 "$auth_dir/passwd" "$auth_dir/acl" "$auth_dir/healthcheck.password"

# TLS: a second listener (port $WATTCAST_TLS_PORT, default 8883) when the certificates
# folder ($WATTCAST_CERTS_DIR, made by `wattcast broker certs`) holds the broker's
# certificate; mosquitto.conf includes $auth_dir/listeners.  Without it, no TLS listener.
certs_dir="${WATTCAST_CERTS_DIR:-}"
mkdir -p "$auth_dir/listeners"
rm -f "$auth_dir/listeners/tls.conf"
tls=""
if [ -n "$certs_dir" ] && [ -f "$certs_dir/broker.pem" ]; then
    for f in ca.pem broker.pem broker.key; do
        if [ ! -f "$certs_dir/$f" ]; then
            echo "mosquitto-init: error: $certs_dir/$f is missing (make the folder with 'wattcast broker certs')" >&2
            exit 1
        fi
        cp "$certs_dir/$f" "$auth_dir/tls-$f"
        chmod 600 "$auth_dir/tls-$f"
    done
    cat > "$auth_dir/listeners/tls.conf" <<EOF
listener ${WATTCAST_TLS_PORT:-8883}
use_username_as_clientid true
cafile $auth_dir/tls-ca.pem
certfile $auth_dir/tls-broker.pem
keyfile $auth_dir/tls-broker.key
EOF
    tls=" and a TLS listener on port ${WATTCAST_TLS_PORT:-8883}"
fi

if id mosquitto > /dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    chown -R mosquitto:mosquitto "$auth_dir"
fi
echo "mosquitto-init: password file with users: $users healthcheck$tls"
