#!/usr/bin/env bash
# Runs every test of berth: unit tests and the end-to-end tests against a real Docker engine,
# a real registry, and the real git and ssh clients. Installs and starts what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

./install.sh --deps-only
# The real clients the tests drive: ssh, openssl and curl (TLS), and pebble (Let's Encrypt's
# test CA) with its mock DNS for the ACME test.
missing=()
for tool in ssh:openssh-client openssl:openssl curl:curl pebble:pebble pebble-challtestsrv:pebble; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "-----> Installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Rendered Kubernetes manifests are checked against the official schemas, offline.
python3 -c 'import kubernetes_validate' 2>/dev/null || python3 -m pip install -q kubernetes-validate

# Containers here cannot pull: fixture apps build FROM local base images (busybox, and a Debian
# with python, node, go, ruby and rust for the buildpack fixtures, and a bare Debian 12 with
# systemd for the install test; made once, then reused).
bash tests/base_images.sh

# The swarm target is tested on a real single-node swarm.
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}')" != active ]; then
  echo "-----> Making this engine a single-node swarm"
  docker swarm init --advertise-addr 127.0.0.1 >/dev/null
fi

[ "${1:-}" = "--no-run" ] && exit 0
export BERTH_TEST_REGISTRY=127.0.0.1:${BERTH_REGISTRY_PORT:-5055}
# The registry has auth (install.sh): every berth a test starts reads its credentials from here.
export BERTH_REGISTRY_CREDENTIALS=${BERTH_CONFIG_DIR:-/etc/berth}/registry.credentials
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --release --locked --no-fail-fast "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary.
awk '/^test result:/ {p += $4; f += $6} END {printf "tests: %d passed, %d failed\n", p, f}' "$log"
exit "$status"
