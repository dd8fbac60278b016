#!/usr/bin/env bash
# Command latency over SSH: the median of RUNS (default 20) `apps:list` calls with 100 apps
# registered, beside a bare `ssh HOST true` against OpenSSH sshd in the same run, and the median
# of `ps:scale web=5` and `ps:scale web=1` (SCALE_RUNS, default 5) on a fixture app.
# Target: apps:list < 50 ms over the OpenSSH baseline.
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-20}
scale_runs=${SCALE_RUNS:-5}
setup_tools
docker image inspect berth-test/busybox:latest >/dev/null 2>&1 || "$root/tests/run.sh" --no-run >/dev/null
start_berth cmds ""
start_sshd
app="scale-$$"
bench_apps="$app"
for i in $(seq 1 99); do "$root/target/release/berth" apps:create "bench-$i-$$" --config "$work/cmds.toml" >/dev/null; done

repo=$work/app
git init -q -b main "$repo"
mkdir -p "$repo/www"; echo scaled >"$repo/www/index.html"
printf 'FROM berth-test/busybox:latest\nCOPY www /www\nCMD ["sh", "-c", "exec httpd -f -p $PORT -h /www"]\n' >"$repo/Dockerfile"
git -C "$repo" add -A; git -C "$repo" -c user.name=b -c user.email=b@b commit -qm app
(cd "$repo" && GIT_SSH_COMMAND="ssh $ssh_opts" git push -q "ssh://berth@127.0.0.1:$berth_port/$app" main 2>/dev/null)

berth_ssh() { ssh $ssh_opts -p "$berth_port" berth@127.0.0.1 "$@"; }
apps=$(berth_ssh apps:list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$apps" -eq 100 ] || { echo "expected 100 apps, apps:list shows $apps" >&2; exit 1; }

time_ms() { local start; start=$(now); "$@" >/dev/null; awk -v a="$start" -v b="$(now)" 'BEGIN {printf "%.1f\n", (b - a) * 1000}'; }
: >"$work/list.t"; : >"$work/true.t"; : >"$work/true25519.t"; : >"$work/help.t"
for _ in $(seq 1 "$runs"); do
  time_ms berth_ssh apps:list >>"$work/list.t"
  time_ms ssh $ssh_opts -p "$sshd_port" root@127.0.0.1 true >>"$work/true.t"
  # The key exchange berth negotiates (OpenSSH prefers the slower sntrup761 hybrid).
  time_ms ssh $ssh_opts -o KexAlgorithms=curve25519-sha256 -p "$sshd_port" root@127.0.0.1 true >>"$work/true25519.t"
  time_ms berth_ssh help >>"$work/help.t"
done
: >"$work/up.t"; : >"$work/down.t"
for _ in $(seq 1 "$scale_runs"); do
  time_ms berth_ssh ps:scale "$app" web=5 >>"$work/up.t"
  [ "$(docker ps -q --filter "label=berth.app=$app" | wc -l)" -eq 5 ] || { echo "scale up did not run 5 containers" >&2; exit 1; }
  time_ms berth_ssh ps:scale "$app" web=1 >>"$work/down.t"
done
l=$(median <"$work/list.t"); t=$(median <"$work/true.t")
echo "commands: medians in ms"
printf '  %-46s %8s   (runs: %s)\n' "apps:list over berth SSH, 100 apps" "$l" "$(tr '\n' ' ' <"$work/list.t")"
printf '  %-46s %8s   (runs: %s)\n' "ssh HOST true against OpenSSH sshd" "$t" "$(tr '\n' ' ' <"$work/true.t")"
t2=$(median <"$work/true25519.t")
printf '  %-46s %8s   (runs: %s)\n' "ssh HOST true, OpenSSH, curve25519 kex" "$t2" "$(tr '\n' ' ' <"$work/true25519.t")"
printf '  %-46s %8s   (runs: %s)\n' "help over berth SSH (no DB, no engine)" "$(median <"$work/help.t")" "$(tr '\n' ' ' <"$work/help.t")"
echo "  apps:list over the baseline: $(awk -v a="$l" -v b="$t" 'BEGIN {printf "%.1f", a - b}') ms (target < 50); over the curve25519 baseline: $(awk -v a="$l" -v b="$t2" 'BEGIN {printf "%.1f", a - b}') ms"
printf '  %-46s %8s   (runs: %s)\n' "ps:scale web=1 -> 5" "$(median <"$work/up.t")" "$(tr '\n' ' ' <"$work/up.t")"
printf '  %-46s %8s   (runs: %s)\n' "ps:scale web=5 -> 1" "$(median <"$work/down.t")" "$(tr '\n' ' ' <"$work/down.t")"
