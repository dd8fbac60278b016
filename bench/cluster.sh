#!/usr/bin/env bash
# berth on a real 3-node swarm against a single-node swarm and the docker target, in the same
# run. Four containers with systemd as PID 1 and their own engines (berth-test/swarm-node,
# ENVIRONMENT.md's flags) on a network of their own: a manager where install.sh --swarm
# installs berth, two workers that join it as the README says, and a lone host where
# install.sh --swarm makes a single-node swarm. The same busybox app, pushed alternately over
# OpenSSH from this machine to: `cluster` (swarm, 3 nodes), `solo` (swarm, 1 node) and `docker`
# (docker target, on the manager).
# Prints (medians of RUNS, 5): push-to-live (push start → new content through the router);
# seconds from `ps:scale web=6` to six instances answering (cluster and solo); then, under wrk
# load on the cluster, failed requests during a rolling update and during the loss of a worker
# (its container killed), each beside the requests made.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-5}
image=berth-test/swarm-node:bookworm
tag=berth-bench-cluster-$$
work=$(mktemp -d /tmp/berth-bench.XXXXXX)
hosts=(manager worker-1 worker-2 solo)
cleanup() {
  for h in "${hosts[@]}"; do docker rm -f -v "$tag-$h" >/dev/null 2>&1 || true; done
  docker network rm "$tag" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f\n", b - a}'; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }

docker image inspect "$image" >/dev/null 2>&1 || bash "$root/tests/base_images.sh" >/dev/null
(cd "$root" && cargo build --release --locked --quiet)

echo "-----> Booting four swarm-node hosts"
docker network create "$tag" >/dev/null
for h in "${hosts[@]}"; do
  docker run -d --name "$tag-$h" --hostname "$tag-$h" --network "$tag" --cap-add ALL --cap-drop SYS_RESOURCE \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined --cgroupns=host \
    -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock -v /var/lib/docker \
    "$image" /lib/systemd/systemd >/dev/null
done
addr() { docker inspect -f "{{(index .NetworkSettings.Networks \"$tag\").IPAddress}}" "$tag-$1"; }
on() { local h=$1; shift; docker exec "$tag-$h" bash -c "$*"; }
for h in "${hosts[@]}"; do
  for _ in $(seq 1 120); do
    state=$(on "$h" systemctl is-system-running 2>/dev/null || true)
    [ "$state" = running ] || [ "$state" = degraded ] && break
    sleep 0.5
  done
done
manager=$(addr manager); solo=$(addr solo)

ssh-keygen -q -t ed25519 -N '' -f "$work/key"
ssh_opts="-i $work/key -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
berth_at() { local a=$1; shift; ssh $ssh_opts -p 2222 "berth@$a" "$@"; }
install_on() { # host address
  (cd "$root" && { git ls-files -co --exclude-standard; echo target/release/berth; } | tar -c -f - -T -) |
    docker exec -i "$tag-$1" bash -c 'mkdir -p /opt/berth && tar -x -C /opt/berth'
  docker exec -i "$tag-$1" bash -c 'cat > /root/admin.pub' <"$work/key.pub"
  on "$1" "cd /opt/berth && BERTH_PUBLIC_HOST=$2 ./install.sh --swarm $2 --admin-key /root/admin.pub" >"$work/install-$1.log" 2>&1 ||
    { cat "$work/install-$1.log"; exit 1; }
  docker save berth-test/busybox:latest | docker exec -i "$tag-$1" docker load >/dev/null
  for _ in $(seq 1 120); do berth_at "$2" apps:list >/dev/null 2>&1 && break; sleep 0.5; done
}
echo "-----> Installing berth on the manager and the lone host (install.sh --swarm)"
install_on manager "$manager"
install_on solo "$solo"
join=$(berth_at "$manager" nodes:join-command | grep '^docker swarm join')
for w in worker-1 worker-2; do
  on "$w" "printf '{\"insecure-registries\": [\"$manager:5055\"]}\n' > /etc/docker/daemon.json && systemctl reload docker && $join" >/dev/null
done

app=$work/app
git init -q -b main "$app"
mkdir -p "$app/www"
printf 'FROM berth-test/busybox:latest\nCOPY www /www\nCMD ["sh", "-c", "echo $DYNO > /www/who; exec httpd -f -p $PORT -h /www"]\n' >"$app/Dockerfile"
change() { echo "$1" >"$app/www/index.html"; git -C "$app" add -A; git -C "$app" -c user.name=b -c user.email=b@b commit -qm "$1"; }
# where app path -> body ("where" is the router's address: the manager or the lone host)
get() { curl -fsS -m 2 -H "Host: $2.$1" "http://$1$3" 2>/dev/null || true; }
wait_for() { for _ in $(seq 1 3000); do [ "$(get "$1" "$2" "$3")" = "$4" ] && return 0; sleep 0.02; done; echo "never answered: $2 $3" >&2; exit 1; }
push() { # where app content -> seconds
  local start
  start=$(now)
  (cd "$app" && GIT_SSH_COMMAND="ssh $ssh_opts" git push -q "ssh://berth@$1:2222/$2" main >/dev/null 2>"$work/push.err") ||
    { echo "push to $2 failed: $(cat "$work/push.err")" >&2; exit 1; }
  wait_for "$1" "$2" / "$3"
  elapsed "$start"
}
scale6() { # where app -> seconds from ps:scale web=6 to six instances answering
  local start seen
  start=$(now)
  berth_at "$1" ps:scale "$2" web=6 >/dev/null
  for _ in $(seq 1 3000); do
    seen=$(for _ in $(seq 1 24); do get "$1" "$2" /who; done | sort -u | wc -l)
    [ "$seen" -ge 6 ] && break
    sleep 0.02
  done
  [ "$seen" -ge 6 ] || { echo "$2: six instances never answered" >&2; exit 1; }
  elapsed "$start"
  berth_at "$1" ps:scale "$2" web=1 >/dev/null
}

berth_at "$manager" apps:create cluster >/dev/null
berth_at "$manager" apps:create docker >/dev/null
berth_at "$manager" apps:set docker target=docker >/dev/null
berth_at "$solo" apps:create solo >/dev/null
# Warm-up (not counted): the first pushes make the repos and warm the build caches.
change warm
push "$manager" cluster warm >/dev/null; push "$manager" docker warm >/dev/null; push "$solo" solo warm >/dev/null

: >"$work/cluster.t"; : >"$work/solo.t"; : >"$work/docker.t"; : >"$work/cluster.s"; : >"$work/solo.s"
for i in $(seq 1 "$runs"); do
  change "run $i"
  push "$manager" cluster "run $i" >>"$work/cluster.t"
  push "$solo" solo "run $i" >>"$work/solo.t"
  push "$manager" docker "run $i" >>"$work/docker.t"
  scale6 "$manager" cluster >>"$work/cluster.s"
  scale6 "$solo" solo >>"$work/solo.s"
done
c=$(median <"$work/cluster.t"); s=$(median <"$work/solo.t"); d=$(median <"$work/docker.t")
cs=$(median <"$work/cluster.s"); ss=$(median <"$work/solo.s")
echo "push-to-live, median of $runs (s):   3-node swarm $c   1-node swarm $s   docker $d   3-node/1-node $(ratio "$c" "$s")   3-node/docker $(ratio "$c" "$d")"
echo "  3-node: $(tr '\n' ' ' <"$work/cluster.t")"
echo "  1-node: $(tr '\n' ' ' <"$work/solo.t")"
echo "  docker: $(tr '\n' ' ' <"$work/docker.t")"
echo "ps:scale web=6 to six answering, median of $runs (s):   3-node swarm $cs   1-node swarm $ss   3-node/1-node $(ratio "$cs" "$ss")"
echo "  3-node: $(tr '\n' ' ' <"$work/cluster.s")"
echo "  1-node: $(tr '\n' ' ' <"$work/solo.s")"

# Under load (wrk, 2 threads, 8 connections) on the 3-node swarm with 3 tasks.
berth_at "$manager" ps:scale cluster web=3 >/dev/null
failed() { # wrk output -> "failed of made"
  awk '/requests in/ {made=$1} /Non-2xx/ {bad+=$NF} /Socket errors/ {gsub(",",""); bad+=$4+$6+$8+$10} END {printf "%d failed of %d", bad, made}' "$1"
}
change "rolling"
wrk -t2 -c8 -d25s -H "Host: cluster.$manager" "http://$manager/" >"$work/wrk-update.txt" &
sleep 2; push "$manager" cluster rolling >/dev/null; wait
echo "rolling update under load (3 tasks on 3 nodes): $(failed "$work/wrk-update.txt")"
on_worker=$(berth_at "$manager" ps:report cluster | grep -c "$tag-worker-2 " || true)
wrk -t2 -c8 -d30s -H "Host: cluster.$manager" "http://$manager/" >"$work/wrk-loss.txt" &
sleep 3; docker kill "$tag-worker-2" >/dev/null; wait
echo "worker lost under load ($on_worker of 3 tasks on it): $(failed "$work/wrk-loss.txt")"
