#!/usr/bin/env bash
# The systemd target against the docker target, on the same host in the same run: a Debian 12
# container with systemd as PID 1 (berth-test/debian-systemd:bookworm, ENVIRONMENT.md's flags)
# where install.sh installs berth and its own engine, as tests/systemd.rs does. Two apps, the
# same busybox app, one per target, pushed alternately over OpenSSH from this machine.
# Prints: push-to-live seconds (push start → the new content served through the router), and
# the seconds from `ps:scale web=3` to all three instances answering; medians of RUNS (5).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${RUNS:-5}
image=berth-test/debian-systemd:bookworm
name=berth-bench-targets-$$
work=$(mktemp -d /tmp/berth-bench.XXXXXX)
cleanup() { docker rm -f -v "$name" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f\n", b - a}'; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }

docker image inspect "$image" >/dev/null 2>&1 || bash "$root/tests/base_images.sh" >/dev/null
(cd "$root" && cargo build --release --locked --quiet)

echo "-----> Booting a systemd host and installing berth there"
docker run -d --name "$name" --hostname berth-host --cap-add ALL --cap-drop SYS_RESOURCE \
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined --cgroupns=host \
  -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock -v /var/lib/docker \
  "$image" /lib/systemd/systemd >/dev/null
address=$(docker inspect -f '{{.NetworkSettings.IPAddress}}' "$name")
for _ in $(seq 1 120); do
  state=$(docker exec "$name" systemctl is-system-running 2>/dev/null || true)
  [ "$state" = running ] || [ "$state" = degraded ] && break
  sleep 0.5
done
ssh-keygen -q -t ed25519 -N '' -f "$work/key"
(cd "$root" && { git ls-files -co --exclude-standard; echo target/release/berth; } | tar -c -f - -T -) |
  docker exec -i "$name" bash -c 'mkdir -p /opt/berth && tar -x -C /opt/berth'
docker exec -i "$name" bash -c 'cat > /root/admin.pub' <"$work/key.pub"
docker exec "$name" bash -c "cd /opt/berth && BERTH_PUBLIC_HOST=$address ./install.sh --admin-key /root/admin.pub" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; exit 1; }
docker save berth-test/busybox:latest | docker exec -i "$name" docker load >/dev/null

ssh_opts="-i $work/key -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
berth() { ssh $ssh_opts -p 2222 "berth@$address" "$@"; }
for _ in $(seq 1 120); do berth apps:list >/dev/null 2>&1 && break; sleep 0.5; done

app=$work/app
git init -q -b main "$app"
mkdir -p "$app/www"
printf 'FROM berth-test/busybox:latest\nCOPY www /www\nCMD ["sh", "-c", "echo $DYNO > /www/who; exec httpd -f -p $PORT -h /www"]\n' >"$app/Dockerfile"
change() { echo "$1" >"$app/www/index.html"; git -C "$app" add -A; git -C "$app" -c user.name=b -c user.email=b@b commit -qm "$1"; }
get() { curl -fsS -m 2 -H "Host: $1.$address" "http://$address$2" 2>/dev/null || true; }
wait_for() { for _ in $(seq 1 1500); do [ "$(get "$1" "$2")" = "$3" ] && return 0; sleep 0.02; done; echo "never answered: $1 $2" >&2; exit 1; }

push() { # app content -> seconds
  local start
  start=$(now)
  (cd "$app" && GIT_SSH_COMMAND="ssh $ssh_opts" git push -q "ssh://berth@$address:2222/$1" main >/dev/null 2>"$work/push.err") ||
    { echo "push to $1 failed: $(cat "$work/push.err")" >&2; exit 1; }
  wait_for "$1" / "$2"
  elapsed "$start"
}

scale3() { # app -> seconds from ps:scale web=3 to three instances answering
  local start seen
  start=$(now)
  berth ps:scale "$1" web=3 >/dev/null
  for _ in $(seq 1 1500); do
    seen=$(for _ in $(seq 1 12); do get "$1" /who; done | sort -u | wc -l)
    [ "$seen" -ge 3 ] && break
    sleep 0.02
  done
  [ "$seen" -ge 3 ] || { echo "$1: three instances never answered" >&2; exit 1; }
  elapsed "$start"
  berth ps:scale "$1" web=1 >/dev/null
}

berth apps:create bench-docker >/dev/null
berth apps:create bench-systemd >/dev/null
berth apps:set bench-systemd target=systemd >/dev/null
# Warm-up (not counted): the first pushes make the repos and warm the build cache.
change warm; push bench-docker warm >/dev/null; push bench-systemd warm >/dev/null

: >"$work/docker.t"; : >"$work/systemd.t"; : >"$work/docker.s"; : >"$work/systemd.s"
for i in $(seq 1 "$runs"); do
  change "run $i"
  if [ $((i % 2)) = 1 ]; then order="docker systemd"; else order="systemd docker"; fi
  for target in $order; do push "bench-$target" "run $i" >>"$work/$target.t"; done
  for target in $order; do scale3 "bench-$target" >>"$work/$target.s"; done
done

d=$(median <"$work/docker.t"); s=$(median <"$work/systemd.t")
ds=$(median <"$work/docker.s"); ss=$(median <"$work/systemd.s")
echo "push-to-live, median of $runs (s):   docker $d   systemd $s   systemd/docker $(ratio "$s" "$d")"
echo "  docker:  $(tr '\n' ' ' <"$work/docker.t")"
echo "  systemd: $(tr '\n' ' ' <"$work/systemd.t")"
echo "ps:scale web=3 to three answering, median of $runs (s):   docker $ds   systemd $ss   systemd/docker $(ratio "$ss" "$ds")"
echo "  docker:  $(tr '\n' ' ' <"$work/docker.s")"
echo "  systemd: $(tr '\n' ' ' <"$work/systemd.s")"
