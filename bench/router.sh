#!/usr/bin/env bash
# The HTTP router under load, with wrk, same upstream container, same run:
# 1. berth's router against nginx as a reverse proxy (keep-alive upstreams) and against the
#    upstream directly: requests/s and p99 latency (target: berth/nginx >= 1.0 in requests/s).
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

load() { # url host seconds -> "requests/s p99"
  wrk -t2 -c64 -d"$3" --latency -H "Host: $2" "$1" >"$work/wrk.out" 2>&1
  awk '/Requests\/sec/ {r=$2} /^ +99%/ {p=$2} END {print r, p}' "$work/wrk.out"
}
: >"$work/b"; : >"$work/n"; : >"$work/d"
for _ in 1 2 3; do
  load "http://127.0.0.1:$http_port/" "$app.localhost" 5 >>"$work/b"
  load "http://127.0.0.1:$nginx_port/" "$app.localhost" 5 >>"$work/n"
  load "http://127.0.0.1:$upstream/" "localhost" 5 >>"$work/d"
done
b=$(cut -d' ' -f1 "$work/b" | median) n=$(cut -d' ' -f1 "$work/n" | median) d=$(cut -d' ' -f1 "$work/d" | median)
echo "router throughput (wrk -t2 -c64, median of 3 x 5 s):"
echo "  berth router  $b req/s   p99 $(cut -d' ' -f2 "$work/b" | tr '\n' ' ')"
echo "  nginx proxy   $n req/s   p99 $(cut -d' ' -f2 "$work/n" | tr '\n' ' ')   berth/nginx $(ratio "$b" "$n")"
echo "  direct        $d req/s   p99 $(cut -d' ' -f2 "$work/d" | tr '\n' ' ')"

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
