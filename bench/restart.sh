#!/usr/bin/env bash
# Traffic across berth's own restarts (issue 15), same app, same run: wrk through the HTTP router
# and, at the same time, to the app's own port, for DURATION seconds (default 30) each:
#   baseline  nothing happens;
#   restarts  the control plane is restarted 5 times (kill -9 and TERM + start, alternately) and
#             the data plane is upgraded once (SIGUSR2: its sockets handed to a new process).
# Prints requests/s and failed requests (socket errors + non-2xx; target 0) of both, and the
# ratio of requests/s. The app is the go buildpack fixture of bench/router.sh (net/http,
# keep-alive; busybox httpd closes every connection and drops some under this load by itself).
# Loopback, 2 cores shared by wrk, berth and the app: the figures are relative.
source "$(dirname "$0")/lib.sh"
duration=${DURATION:-30}
setup_tools
command -v wrk >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
bash "$root/tests/base_images.sh" >/dev/null
http_port=$(free_port)
BENCH_HTTP_LISTEN="127.0.0.1:$http_port" start_berth restart "base_domain = \"localhost\"
access_log = \"off\"
$go_buildpack_images"
config=$work/restart.toml
app="restart-bench-$$"; bench_apps=$app
repo=$work/app
write_go_app "$repo"
git -C "$repo" add -A; git -C "$repo" -c user.name=b -c user.email=b@b commit -qm v1
(cd "$repo" && GIT_SSH_COMMAND="ssh $ssh_opts" git push -q "ssh://berth@127.0.0.1:$berth_port/$app" main >"$work/push.log" 2>&1) ||
  { echo "push failed: $(tail -5 "$work/push.log")" >&2; exit 1; }
direct=$(ssh $ssh_opts -p "$berth_port" berth@127.0.0.1 apps:info "$app" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["direct_url"])')

control_pid=$berth_pid
restart_control() { # $1: kill (kill -9) or term (TERM, then wait)
  if [ "$1" = kill ]; then kill -9 "$control_pid"; else kill -TERM "$control_pid"; fi
  while kill -0 "$control_pid" 2>/dev/null; do sleep 0.05; done
  "$root/target/release/berth" serve --config "$config" >>"$work/restart.log" 2>&1 &
  control_pid=$!
  pids+=("$control_pid")
  for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$berth_port") 2>/dev/null && return 0; sleep 0.05; done
  echo "berth did not come back: $(tail -3 "$work/restart.log")" >&2; exit 1
}
upgrade_data_plane() {
  local old; old=$(cat "$work/restart-data/run/dataplane.pid")
  kill -USR2 "$old"
  for _ in $(seq 1 200); do [ "$(cat "$work/restart-data/run/dataplane.pid")" != "$old" ] && return 0; sleep 0.05; done
  echo "the data plane did not hand over" >&2; exit 1
}

run() { # $1: name; $2: what to do during the run (a function name, or "none")
  wrk -t1 -c32 -d"${duration}s" -H "Host: $app.localhost" "http://127.0.0.1:$http_port/" >"$work/$1.router" 2>&1 &
  local router=$!
  wrk -t1 -c16 -d"${duration}s" "$direct/" >"$work/$1.direct" 2>&1 &
  local port=$!
  if [ "$2" != none ]; then "$2"; fi
  wait "$router" "$port"
}
during() {
  local step=$((duration * 1000 / 7))
  for i in 1 2 3 4 5; do
    sleep "$(awk -v s="$step" 'BEGIN {print s / 1000}')"
    if [ $((i % 2)) -eq 1 ]; then restart_control kill; else restart_control term; fi
    if [ "$i" -eq 3 ]; then upgrade_data_plane; fi
  done
}
failed() { awk '/Socket errors/ {gsub(",", ""); e = $4 + $6 + $8 + $10} /Non-2xx/ {n = $5} END {print e + n}' "$1"; }
rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
total() { awk '/requests in/ {print $1}' "$1"; }

run baseline none
run restarts during
echo "traffic across berth's restarts (wrk, ${duration} s each; router -t1 -c32, app port -t1 -c16):"
for what in router direct; do
  b=$(rps "$work/baseline.$what") r=$(rps "$work/restarts.$what")
  echo "  $what: baseline $b req/s, $(total "$work/baseline.$what") requests, failed $(failed "$work/baseline.$what")"
  echo "  $what: 5 control-plane restarts + 1 data-plane upgrade: $r req/s, $(total "$work/restarts.$what") requests, failed $(failed "$work/restarts.$what")   ratio $(ratio "$r" "$b")"
done
