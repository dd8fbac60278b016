#!/usr/bin/env bash
# The HTTP router under load, with wrk, same upstream container, same run:
# 1. berth's router against nginx as a reverse proxy (keep-alive upstreams) and against the
#    upstream directly: requests/s, p99 latency and CPU time per request of each proxy, in 5
#    interleaved rounds (target: berth/nginx >= 1.0 in requests/s, p99 no worse).
# 2. A redeploy in the middle of a DURATION-second wrk run (default 30): `config:set`, which makes
#    a new release and replaces the app's containers (new ones answer first, old ones drain) —
#    a push would spend most of the run compiling Go on the cores wrk uses. Failed requests
#    (socket errors + non-2xx; target 0) and p99 over the run.
# The upstream is the go buildpack fixture (net/http, keep-alive). Loopback, 2 cores shared by
# wrk, the proxy and the app: the figures are relative.
source "$(dirname "$0")/lib.sh"
duration=${DURATION:-30}
setup_tools
command -v wrk >/dev/null && command -v nginx >/dev/null ||
  { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx >/dev/null; }
bash "$root/tests/base_images.sh" >/dev/null
http_port=$(free_port)
# Access logs off on both sides (nginx below has access_log off).
BENCH_HTTP_LISTEN="127.0.0.1:$http_port" start_berth router "base_domain = \"localhost\"
access_log = \"off\"
$go_buildpack_images"
app="router-bench-$$"; bench_apps=$app

repo=$work/app
write_go_app "$repo"
push() {
  git -C "$repo" add -A; git -C "$repo" -c user.name=b -c user.email=b@b commit -qm "$1"
  (cd "$repo" && GIT_SSH_COMMAND="ssh $ssh_opts" git push -q "ssh://berth@127.0.0.1:$berth_port/$app" main >"$work/push.log" 2>&1) ||
    { echo "push failed: $(tail -5 "$work/push.log")" >&2; exit 1; }
}
push v1
upstream=$(ssh $ssh_opts -p "$berth_port" berth@127.0.0.1 ps:report "$app" --json | python3 -c 'import json,sys; print([c["host_port"] for c in json.load(sys.stdin) if c["state"]=="running"][0])')

nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx/pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server 127.0.0.1:$upstream; keepalive 128; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
NGINX
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
sleep 0.5

# CPU time (user + system, clock ticks) of processes: what each proxy spends per request.
ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$t"; }
hz=$(getconf CLK_TCK)
dataplane=$(cat "$work/router-data/run/dataplane.pid" 2>/dev/null || pgrep -f "berth dataplane --config $work/router.toml" | head -1)
nginx_workers=$(pgrep -f "nginx: worker" -P "$(cat "$work/nginx/pid")" | tr '\n' ' ')
load() { # url host seconds pids... -> "requests/s p99 cpu-microseconds-per-request"
  local url=$1 host=$2 seconds=$3; shift 3
  local before; before=$(ticks "$@")
  wrk -t2 -c64 -d"$seconds" --latency -H "Host: $host" "$url" >"$work/wrk.out" 2>&1
  local spent=$(( $(ticks "$@") - before ))
  awk -v spent="$spent" -v hz="$hz" '/requests in/ {n=$1} /Requests\/sec/ {r=$2} /^ +99%/ {p=$2}
    END {printf "%s %s %.1f\n", r, p, spent * 1e6 / hz / n}' "$work/wrk.out"
}
: >"$work/b"; : >"$work/n"; : >"$work/d"
# Interleaved, so that both proxies see the same machine: 5 rounds of 5 s each.
for _ in 1 2 3 4 5; do
  load "http://127.0.0.1:$http_port/" "$app.localhost" 5 $dataplane >>"$work/b"
  load "http://127.0.0.1:$nginx_port/" "$app.localhost" 5 $nginx_workers >>"$work/n"
  load "http://127.0.0.1:$upstream/" "localhost" 5 >>"$work/d"
done
col() { cut -d' ' -f"$1" "$2" | median; }
b=$(col 1 "$work/b") n=$(col 1 "$work/n") d=$(col 1 "$work/d")
p99() { cut -d' ' -f2 "$1" | tr '\n' ' '; }
echo "router throughput (wrk -t2 -c64, 5 interleaved rounds of 5 s, medians):"
echo "  berth router  $b req/s   p99 $(p99 "$work/b")  CPU $(col 3 "$work/b") us/request"
echo "  nginx proxy   $n req/s   p99 $(p99 "$work/n")  CPU $(col 3 "$work/n") us/request"
echo "  direct        $d req/s   p99 $(p99 "$work/d")"
echo "  berth/nginx   requests/s $(ratio "$b" "$n")   CPU per request $(ratio "$(col 3 "$work/b")" "$(col 3 "$work/n")")"
# The round-by-round ratios show the noise of this machine.
echo "  per round     $(paste -d' ' "$work/b" "$work/n" | awk '{printf "%.2f ", $1 / $4}')"

# A redeploy under load.
wrk -t2 -c64 -d"${duration}s" --latency -H "Host: $app.localhost" "http://127.0.0.1:$http_port/" >"$work/wrk.deploy" 2>&1 &
wrk_pid=$!
sleep $((duration / 3))
start=$(now)
ssh $ssh_opts -p "$berth_port" berth@127.0.0.1 config:set "$app" ROUND=2 >"$work/deploy.log" 2>&1 ||
  { echo "redeploy failed: $(tail -3 "$work/deploy.log")" >&2; exit 1; }
took=$(elapsed "$start")
release=$(ssh $ssh_opts -p "$berth_port" berth@127.0.0.1 releases "$app" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["number"])')
wait "$wrk_pid"
errors=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$work/wrk.deploy")
non2xx=$(awk '/Non-2xx/ {print $5}' "$work/wrk.deploy")
total=$(awk '/requests in/ {print $1}' "$work/wrk.deploy")
p99=$(awk '/^ +99%/ {print $2}' "$work/wrk.deploy")
echo "redeploy (config:set -> v$release, $took s) during a ${duration} s wrk run: $total requests, failed $(( ${errors:-0} + ${non2xx:-0} )) (socket errors ${errors:-0}, non-2xx ${non2xx:-0}), p99 $p99"
