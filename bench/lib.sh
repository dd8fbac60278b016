# Shared helpers for the benchmarks: a berth server and an OpenSSH sshd side by side, on
# loopback, each with its own temp state. Sourced, not run.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/berth-bench.XXXXXX)
pids=()
configs=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Each berth's data plane outlives its control plane: `berth stop` ends both.
  for config in "${configs[@]}"; do "$root/target/release/berth" stop --config "$config" >/dev/null 2>&1 || true; done
  docker ps -aq --filter "label=berth.bench=$$" | xargs -r docker rm -f >/dev/null 2>&1 || true
  for app in ${bench_apps:-}; do docker ps -aq --filter "label=berth.app=$app" | xargs -r docker rm -f >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f\n", b - a}'; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
rss_kb() { awk -v f="$2" '$1==f":" {print $2}' "/proc/$1/status"; }

setup_tools() {
  "$root/install.sh" --deps-only >/dev/null
  command -v /usr/sbin/sshd >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null; }
  (cd "$root" && cargo build --release --locked --quiet)
  ssh-keygen -q -t ed25519 -N '' -f "$work/key"
  ssh_opts="-i $work/key -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes"
}

# start_berth NAME [extra config lines]: a server with its own data dir; sets berth_port and
# berth_pid (copy them before starting another).
start_berth() {
  local name=$1
  berth_port=$(free_port)
  cat >"$work/$name.toml" <<TOML
data_dir = "$work/$name-data"
ssh_listen = "127.0.0.1:$berth_port"
public_host = "127.0.0.1"
publish_address = "127.0.0.1"
http_listen = "${BENCH_HTTP_LISTEN:-off}"
https_listen = "off"
admin_listen = "off"
${2:-}
TOML
  "$root/target/release/berth" keys add bench --role admin --key-file "$work/key.pub" --config "$work/$name.toml" >/dev/null
  "$root/target/release/berth" serve --config "$work/$name.toml" >"$work/$name.log" 2>&1 &
  berth_pid=$!
  configs+=("$work/$name.toml")
  pids+=("$berth_pid")
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$berth_port") 2>/dev/null && return 0; sleep 0.05; done
  echo "berth did not start: $(cat "$work/$name.log")" >&2; exit 1
}

# start_sshd: a real OpenSSH sshd for root on a loopback port; sets sshd_port.
start_sshd() {
  sshd_port=$(free_port)
  mkdir -p "$work/sshd" /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$work/sshd/host_key"
  cp "$work/key.pub" "$work/sshd/authorized_keys"
  cat >"$work/sshd/sshd_config" <<CFG
Port $sshd_port
ListenAddress 127.0.0.1
HostKey $work/sshd/host_key
AuthorizedKeysFile $work/sshd/authorized_keys
PidFile $work/sshd/pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AcceptEnv GIT_PROTOCOL
CFG
  /usr/sbin/sshd -f "$work/sshd/sshd_config" -D -e 2>"$work/sshd/log" &
  pids+=($!)
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$sshd_port") 2>/dev/null && return 0; sleep 0.05; done
  echo "sshd did not start: $(cat "$work/sshd/log")" >&2; exit 1
}

# write_go_app DIR: the go buildpack fixture (net/http, keep-alive), answering "hello from v1",
# in a new repo at DIR (not committed yet). Servers given $go_buildpack_images build it from the
# local langs image.
go_buildpack_images='[buildpack_images]
go = "berth-test/langs:bookworm"
go_runtime = "berth-test/busybox:latest"'
write_go_app() {
  git init -q -b main "$1"
  printf 'module fixture\n\ngo 1.19\n' >"$1/go.mod"
  cat >"$1/main.go" <<'GO'
package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	version := "v1"
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "hello from "+version) })
	http.ListenAndServe(":"+os.Getenv("PORT"), nil)
}
GO
}
