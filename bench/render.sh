#!/usr/bin/env bash
# Median in-process time to render every target for an app with three process types
# (target < 5 ms per target). The swarm deploy-to-converged figure of the issue waits for the
# swarm target's apply step, which is not built yet.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
(cd "$root" && cargo build --release --locked --quiet)
"$root/target/release/berth" bench-render --iterations "${ITERATIONS:-500}"
echo "  swarm deploy-to-converged vs docker service create: not measured (applying to swarm is not built yet)"
