#!/usr/bin/env bash
# 1. Median in-process time to render every target for an app with three process types
#    (target < 5 ms per target).
# 2. Swarm deploy-to-converged: seconds from `ps:start` of a stopped swarm app (berth renders the
#    stack, applies it with `docker stack deploy`, waits until the web task answers and routes
#    to it) beside `docker service create` of the same image by hand, polled until its task
#    answers over HTTP, in the same run. Medians of RUNS (default 5), alternating. By hand
#    twice: a bare service (no network), and one on an overlay network, as every service of a
#    stack is (attaching a task to an overlay network costs about 0.45 s here).
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}
setup_tools
"$root/target/release/berth" bench-render --iterations "${ITERATIONS:-500}"
docker image inspect berth-test/busybox:latest >/dev/null 2>&1 || "$root/tests/run.sh" --no-run >/dev/null
[ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = active ] || docker swarm init --advertise-addr 127.0.0.1 >/dev/null

start_berth swarm ""
app="swarm-bench-$$" hand="hand-bench-$$"
bench_apps="$app"
swarm_cleanup() {
  docker stack rm "berth-$app" >/dev/null 2>&1 || true
  docker service rm "$hand" >/dev/null 2>&1 || true
  docker network rm "$hand-net" >/dev/null 2>&1 || true
  cleanup
}
trap swarm_cleanup EXIT
berth() { ssh $ssh_opts -p "$berth_port" berth@127.0.0.1 "$@"; }

repo=$work/app
git init -q -b main "$repo"
mkdir -p "$repo/www"
echo swarm >"$repo/www/index.html"
printf 'FROM berth-test/busybox:latest\nCOPY www /www\nCMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n' >"$repo/Dockerfile"
git -C "$repo" add -A && git -C "$repo" -c user.name=b -c user.email=b@b commit -qm app
berth apps:create "$app" >/dev/null
berth apps:set "$app" target=swarm >/dev/null
url=$(cd "$repo" && GIT_SSH_COMMAND="ssh $ssh_opts" git push -q "ssh://berth@127.0.0.1:$berth_port/$app" main 2>&1 | sed -n 's/.* is live at \(http[^ ]*\).*/\1/p')
[ -n "$url" ] || { echo "the swarm push failed: $(cat "$work/swarm.log" | tail -5)" >&2; exit 1; }
image=$(docker service inspect --format '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "berth-${app}_web")

answers() { [ "$(curl -fsS --max-time 1 "$1" 2>/dev/null)" = swarm ]; }

berth_once() {
  berth ps:stop "$app" >/dev/null
  local start; start=$(now)
  berth ps:start "$app" >/dev/null
  answers "$url" || { echo "berth's swarm app does not answer at $url" >&2; exit 1; }
  elapsed "$start"
}

hand_once() { # [docker service create options]
  local start port=""; start=$(now)
  docker service create -q -d --name "$hand" --init --env PORT=5000 "$@" \
    --publish mode=host,target=5000 "$image" >/dev/null 2>&1
  for _ in $(seq 1 1500); do
    port=$(docker ps --filter "label=com.docker.swarm.service.name=$hand" --format '{{.Ports}}' | sed -n 's/.*0\.0\.0\.0:\([0-9]*\)->.*/\1/p' | head -1)
    [ -n "$port" ] && answers "http://127.0.0.1:$port/" && break
    sleep 0.02
  done
  answers "http://127.0.0.1:$port/" || { echo "the hand-made service never answered" >&2; exit 1; }
  elapsed "$start"
  docker service rm "$hand" >/dev/null
  while [ -n "$(docker ps -aq --filter "label=com.docker.swarm.service.name=$hand")" ]; do sleep 0.1; done
}

docker network create -d overlay "$hand-net" >/dev/null
: >"$work/b"; : >"$work/h"; : >"$work/o"
for _ in $(seq 1 "$runs"); do
  berth_once >>"$work/b"
  hand_once >>"$work/h"
  hand_once --network "$hand-net" >>"$work/o"
done
b=$(median <"$work/b") h=$(median <"$work/h") o=$(median <"$work/o")
echo "swarm deploy-to-converged (median of $runs):"
echo "  berth ps:start (stack deploy, overlay network)   $b s   runs: $(tr '\n' ' ' <"$work/b")"
echo "  docker service create by hand, overlay network  $o s   runs: $(tr '\n' ' ' <"$work/o")   berth/this $(ratio "$b" "$o")"
echo "  docker service create by hand, no network       $h s   runs: $(tr '\n' ' ' <"$work/h")   berth/this $(ratio "$b" "$h")"
