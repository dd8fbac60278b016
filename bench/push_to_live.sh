#!/usr/bin/env bash
# Push-to-live seconds for a trivial Dockerfile app on a warm engine: berth against the same work
# done by hand in the same run (git push over OpenSSH sshd to a bare repo, docker build,
# docker run, poll until it answers). Medians of RUNS runs (default 5), alternating.
# Also berth with a registry push in the pipeline, and the server's idle and peak RSS.
# Target: berth/by-hand <= 1.15; idle RSS < 30 MB.
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}
setup_tools
registry="127.0.0.1:${BERTH_REGISTRY_PORT:-5055}"
docker image inspect berth-test/busybox:latest >/dev/null 2>&1 || "$root/tests/run.sh" --no-run >/dev/null

start_berth local ""
local_port=$berth_port local_pid=$berth_pid
start_berth withreg "registry = \"$registry\"
registry_credentials = \"${BERTH_CONFIG_DIR:-/etc/berth}/registry.credentials\""
reg_port=$berth_port
start_sshd
sleep 1
idle_rss=$(rss_kb "$local_pid" VmRSS)
app_local="live-local-$$" app_reg="live-reg-$$"
bench_apps="$app_local $app_reg"

app=$work/app
git init -q -b main "$app"
mkdir -p "$app/www"
printf 'FROM berth-test/busybox:latest\nCOPY www /www\nCMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n' >"$app/Dockerfile"
git init -q --bare "$work/hand.git"

change() { echo "$1" >"$app/www/index.html"; git -C "$app" add -A; git -C "$app" -c user.name=b -c user.email=b@b commit -qm "$1"; }
wait_for() { for _ in $(seq 1 600); do [ "$(curl -fsS "$1" 2>/dev/null)" = "$2" ] && return 0; sleep 0.02; done; echo "never answered: $1" >&2; exit 1; }

berth_push() { # port app content -> seconds
  local start url
  start=$(now)
  url=$(cd "$app" && GIT_SSH_COMMAND="ssh $ssh_opts" git push -q "ssh://berth@127.0.0.1:$1/$2" main 2>&1 | sed -n 's/.* is live at \(http[^ ]*\).*/\1/p')
  [ -n "$url" ] || { echo "berth push failed" >&2; exit 1; }
  wait_for "$url" "$3"
  elapsed "$start"
}

hand_previous=""
hand_push() { # content -> seconds
  local start id port
  start=$(now)
  (cd "$app" && GIT_SSH_COMMAND="ssh $ssh_opts" git push -q "ssh://root@127.0.0.1:$sshd_port$work/hand.git" main)
  git --git-dir="$work/hand.git" archive main | docker build -q -t "hand-$$:latest" - >/dev/null 2>&1
  id=$(docker run -d --init --label "berth.bench=$$" -e PORT=5000 -p 127.0.0.1::5000 "hand-$$:latest")
  port=$(docker port "$id" 5000/tcp | head -1 | sed 's/.*://')
  wait_for "http://127.0.0.1:$port/" "$1"
  elapsed "$start"
  [ -n "$hand_previous" ] && docker rm -f "$hand_previous" >/dev/null
  hand_previous=$id
}

# Warm-up (not counted): first pushes create repos and warm the build cache.
change warm; berth_push "$local_port" "$app_local" warm >/dev/null; berth_push "$reg_port" "$app_reg" warm >/dev/null; hand_push warm >/dev/null

: >"$work/berth.t"; : >"$work/hand.t"; : >"$work/reg.t"
peak_rss=0
for i in $(seq 1 "$runs"); do
  change "berth-$i"; berth_push "$local_port" "$app_local" "berth-$i" >>"$work/berth.t"
  change "hand-$i"; hand_push "hand-$i" >>"$work/hand.t"
  change "reg-$i"; berth_push "$reg_port" "$app_reg" "reg-$i" >>"$work/reg.t"
done
peak_rss=$(rss_kb "$local_pid" VmHWM)
docker rmi -f "hand-$$:latest" >/dev/null 2>&1 || true

b=$(median <"$work/berth.t"); h=$(median <"$work/hand.t"); r=$(median <"$work/reg.t")
echo "push_to_live: median of $runs runs, seconds from git push start until the app answers"
printf '  %-44s %s   (runs: %s)\n' "berth, single-host (same work as by hand)" "$b" "$(tr '\n' ' ' <"$work/berth.t")"
printf '  %-44s %s   (runs: %s)\n' "by hand: sshd push + docker build + run" "$h" "$(tr '\n' ' ' <"$work/hand.t")"
printf '  %-44s %s   (runs: %s)\n' "berth, with registry push" "$r" "$(tr '\n' ' ' <"$work/reg.t")"
echo "  ratio berth/by-hand: $(ratio "$b" "$h")   (target <= 1.15)"
echo "  ratio berth+registry/by-hand: $(ratio "$r" "$h")"
echo "  berth server RSS: idle $((idle_rss / 1024)) MB (target < 30), peak $((peak_rss / 1024)) MB"
