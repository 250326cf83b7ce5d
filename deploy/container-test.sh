#!/usr/bin/env bash
# Builds the gridwatch image with podman + runc on local Debian base images and checks it:
# /healthz answers through a published port, the HEALTHCHECK (`gridwatch healthcheck`) passes,
# the process runs as the non-root user 65532 on a read-only root filesystem, and SIGTERM
# reaches gridwatch (PID 1, exec-form ENTRYPOINT) which flushes and exits 0.
#   deploy/container-test.sh            (root; installs podman, runc, debootstrap if missing)
# Opt-in, not part of .ci/run: a cold run (base images + a release build of every dependency
# inside the container) takes about half an hour on 2 cores; see deploy/README.md "Container".
# Base images are kept by podman between runs (make-base-images.sh skips existing ones), and so
# is the dependency layer: a warm run rebuilds gridwatch alone.
set -euo pipefail
cd "$(dirname "$0")/.."

export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/deploy/container/containers.conf}"
RUNTIME="${PODMAN_RUNTIME:-/usr/sbin/runc}"   # crun fails on this kernel's hybrid cgroups
PODMAN=(podman --runtime "$RUNTIME")
IMAGE="${IMAGE:-localhost/gridwatch:test}"
PORT="${PORT:-19750}"

step() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
seconds_since() { echo $(( $(date +%s) - $1 )); }

step "packages"
missing=()
for tool in podman runc debootstrap curl; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends podman runc debootstrap uidmap \
    containernetworking-plugins iptables curl
fi
podman --version

step "base images"
started=$(date +%s)
deploy/container/make-base-images.sh
echo "base images: $(seconds_since "$started") s"

step "build $IMAGE"
started=$(date +%s)
# --format docker keeps the HEALTHCHECK (OCI image configs have none); --network host: the
# build fetches crates (and, on official bases, Debian packages).
"${PODMAN[@]}" build --network host --format docker -f deploy/Dockerfile \
  --build-arg RUST_IMAGE=gridwatch-local/rust:1-bookworm \
  --build-arg RUNTIME_IMAGE=gridwatch-local/debian:bookworm-slim \
  -t "$IMAGE" . >/tmp/gridwatch-container-build.log 2>&1 \
  || { tail -n 40 /tmp/gridwatch-container-build.log; fail "image build (log: /tmp/gridwatch-container-build.log)"; }
echo "build: $(seconds_since "$started") s"
"${PODMAN[@]}" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$IMAGE"

work="$(mktemp -d)"
name="gridwatch-test-$$"
cleanup() { "${PODMAN[@]}" rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
viewer_token="$(od -An -N24 -tx1 /dev/urandom | tr -d ' \n')"
printf 'viewer %s\n' "$viewer_token" >"$work/api-tokens"
chmod 0444 "$work/api-tokens"

step "run (read-only root filesystem, simulator)"
"${PODMAN[@]}" run -d --name "$name" --read-only \
  -p "127.0.0.1:$PORT:9750" \
  -v "$work/api-tokens:/etc/gridwatch-secrets/api-tokens:ro" \
  "$IMAGE" >/dev/null
healthy=""
for _ in $(seq 1 60); do
  if curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then healthy=yes; break; fi
  sleep 1
done
[ -n "$healthy" ] || { "${PODMAN[@]}" logs "$name" | tail -n 20; fail "/healthz did not answer 200 within 60 s"; }
echo "/healthz: $(curl -sS "http://127.0.0.1:$PORT/healthz")"
code="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/api/v1/alerts")"
[ "$code" = 401 ] || fail "/api/v1/alerts without a token answered $code, not 401"
code="$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $viewer_token" \
  "http://127.0.0.1:$PORT/api/v1/cells?top=3")"
[ "$code" = 200 ] || fail "/api/v1/cells with the viewer token answered $code"
echo "API: 401 without a token, 200 with the viewer token"

step "HEALTHCHECK"
"${PODMAN[@]}" exec "$name" gridwatch healthcheck || fail "gridwatch healthcheck failed"
health="$("${PODMAN[@]}" inspect "$IMAGE" --format '{{json .Config.Healthcheck}}' 2>/dev/null || true)"
[ -n "$health" ] && [ "$health" != null ] || \
  health="$("${PODMAN[@]}" inspect "$IMAGE" --format '{{json .HealthCheck}}')"
grep -q '"gridwatch","healthcheck"' <<<"$health" || fail "image has no gridwatch HEALTHCHECK: $health"
echo "image HEALTHCHECK: $health"

step "user and filesystem"
uid="$("${PODMAN[@]}" exec "$name" id -u)"
[ "$uid" = 65532 ] || fail "runs as uid $uid"
pid1="$("${PODMAN[@]}" exec "$name" cat /proc/1/cmdline | tr '\0' ' ')"
case "$pid1" in gridwatch\ run*) ;; *) fail "PID 1 is '$pid1', not gridwatch" ;; esac
if "${PODMAN[@]}" exec "$name" touch /usr/local/bin/probe 2>/dev/null; then
  fail "the root filesystem is writable"
fi
"${PODMAN[@]}" exec "$name" touch /var/lib/gridwatch/probe || fail "/var/lib/gridwatch not writable"
echo "uid 65532, PID 1 = $pid1, root filesystem read-only, /var/lib/gridwatch writable"

step "SIGTERM"
sleep 2
"${PODMAN[@]}" kill --signal TERM "$name" >/dev/null
exit_code="$(timeout 30 "${PODMAN[@]}" wait "$name")" || fail "gridwatch did not exit within 30 s of SIGTERM"
[ "$exit_code" = 0 ] || { "${PODMAN[@]}" logs "$name" | tail -n 20; fail "exit code $exit_code after SIGTERM"; }
"${PODMAN[@]}" logs "$name" 2>&1 | grep -q "gridwatch stopped" || fail "no clean-shutdown log line"
echo "SIGTERM: exit 0, 'gridwatch stopped' logged"
echo "container test passed"
