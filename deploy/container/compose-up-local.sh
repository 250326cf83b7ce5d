#!/usr/bin/env bash
# Brings deploy/docker-compose.yml up with podman-compose where no image registry is reachable:
# local stand-ins (stand-ins.Containerfile: the host's tansu as Kafka, Debian's prometheus and
# prometheus-alertmanager binaries, Debian's python3) and the gridwatch image of
# deploy/container-test.sh, via the override compose.podman.yml; Grafana is left out. Then
# checks that events flow end to end and prints what each part saw. Needs podman-compose
# (PyPI 1.6.0 in a venv; PODMAN_COMPOSE names it) and the DNS plugin of CNI (Debian
# golang-github-containernetworking-plugin-dnsname) so containers find each other by name.
# Usage (root):
#   GRIDWATCH_TANSU_BIN=/path/to/tansu deploy/container/compose-up-local.sh   # up + checks
#   deploy/container/compose-up-local.sh down
set -euo pipefail
cd "$(dirname "$0")/../.."
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/container/containers.conf}"
PODMAN_COMPOSE="${PODMAN_COMPOSE:-podman-compose}"
files=(-f deploy/docker-compose.yml -f deploy/container/compose.podman.yml)
services=(kafka kafka-init producer gridwatch prometheus alertmanager webhook-receiver)
compose() { "$PODMAN_COMPOSE" --podman-args="--runtime /usr/sbin/runc" "${files[@]}" "$@"; }

if [ "${1:-up}" = down ]; then
  compose down -v
  exit 0
fi

# Kept until `down` (the tokens file is mounted from here).
context="${TMPDIR:-/tmp}/gridwatch-compose-local"
rm -rf "$context"; mkdir -p "$context"
cp "${GRIDWATCH_TANSU_BIN:?set GRIDWATCH_TANSU_BIN to the tansu binary}" "$context/tansu"
cp "$(command -v prometheus)" "$context/prometheus"
cp "$(command -v prometheus-alertmanager)" "$context/prometheus-alertmanager"
cp -r /usr/share/prometheus/alertmanager "$context/alertmanager-templates"
for target in tansu prometheus alertmanager python; do
  podman --runtime /usr/sbin/runc build --network host -q --target "$target" \
    -f deploy/container/stand-ins.Containerfile -t "gridwatch-local/$target" "$context" >/dev/null
done
podman image exists localhost/gridwatch:test || deploy/container-test.sh

# The override mounts this file (podman-compose has no environment-sourced secrets).
export GRIDWATCH_API_TOKENS_FILE="$PWD/deploy/container/.api-tokens"
printf 'viewer %s\n' "$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')" >"$GRIDWATCH_API_TOKENS_FILE"
chmod 0444 "$GRIDWATCH_API_TOKENS_FILE"
compose up -d "${services[@]}"

echo "== waiting for alerts to reach Alertmanager (up to 5 min)"
for _ in $(seq 1 300); do
  alerts="$(curl -fsS localhost:9093/api/v2/alerts 2>/dev/null || true)"
  if grep -q '"alertname":"Gridwatch' <<<"$alerts"; then break; fi
  sleep 1
done
echo "gridwatch /readyz: $(curl -sS localhost:9750/readyz)"
echo "gridwatch events received: $(curl -sS localhost:9750/metrics | grep '^gridwatch_events_received_total')"
echo "gridwatch alert deliveries: $(curl -sS localhost:9750/metrics | grep '^gridwatch_alert_deliveries_total' | grep -v ' 0$' | tr '\n' ' ')"
echo "prometheus target: $(curl -sS 'localhost:9090/api/v1/query?query=up%7Bjob%3D%22gridwatch%22%7D')"
echo "prometheus rules loaded: $(curl -sS localhost:9090/api/v1/rules | grep -o '"name":"[^"]*"' | wc -l)"
echo "alertmanager alerts: $(grep -o '"alertname":"[^"]*"' <<<"$alerts" | sort | uniq -c | tr '\n' ' ')"
echo "webhook receiver saw: $(podman logs gridwatch_webhook-receiver_1 2>&1 | cut -c1-60 | awk '{print $1, $2}' | sort | uniq -c | tr '\n' ' ')"
