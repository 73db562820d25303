#!/bin/sh
# Creates the deployment's RabbitMQ users, each held to its role: the `rabbitmq-users` step of
# docker-compose.cluster.yml (run in the rabbitmq image, once the nodes are up).
#
# Rights come from ./users (generated from mosquitto/acl by wattcast.rabbitmq.role_grants): the
# collector and the predictors speak AMQP and get their own queues and topics; the simulator,
# viewer, dashboard and homeassistant speak MQTT and get their topics only.  Passwords come from
# the environment, one variable per user, as for mosquitto (WATTCAST_PASSWORD_PREDICTOR_LSTM, ...;
# `wattcast broker passwd --env-file .env` makes them); a missing or empty one is an error.
# RABBITMQ_NODE names the node to talk to (default rabbit@rabbitmq-1); rabbitmqctl needs the
# cluster's Erlang cookie (RABBITMQ_CTL_ERL_ARGS=-setcookie ... in compose).
set -eu

node="${RABBITMQ_NODE:-rabbit@rabbitmq-1}"
src_dir="$(cd "$(dirname "$0")" && pwd)"
ctl() { rabbitmqctl -q -n "$node" "$@" </dev/null; }  # not the list it reads

grep -v '^#' "$src_dir/users" | while read -r kind user configure write read topic_write topic_read; do
    var="WATTCAST_PASSWORD_$(echo "$user" | tr 'a-z' 'A-Z' | sed 's/[^A-Z0-9]/_/g')"
    password="$(printenv "$var" || true)"
    if [ -z "$password" ]; then
        echo "rabbitmq-users: error: $var is not set (wattcast broker passwd --env-file .env)" >&2
        exit 1
    fi
    ctl add_user "$user" "$password" 2>/dev/null || ctl change_password "$user" "$password"  # made earlier
    ctl set_permissions -p / "$user" "$configure" "$write" "$read"
    ctl set_topic_permissions -p / "$user" amq.topic "$topic_write" "$topic_read"
    echo "rabbitmq-users: $user ($kind)"
done
