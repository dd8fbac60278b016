#!/usr/bin/env bash
# Median seconds to push 100 MB of incompressible data (a branch that does not deploy) to berth,
# beside OpenSSH sshd + git-receive-pack into a fresh bare repo in the same run: once with git's
# defaults (receive.unpackLimit=100 explodes the pack into loose objects) and once with the repo
# settings berth uses (receive.unpackLimit=1). Every run pushes into a fresh repo; runs alternate.
# Target: berth <= 0.85 x OpenSSH with the same settings.
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}
size_mb=${SIZE_MB:-100}
setup_tools
start_berth bench ""
start_sshd

app=$work/data
git init -q -b data "$app"
for i in 1 2 3 4; do head -c $((size_mb * 1024 * 1024 / 4)) /dev/urandom >"$app/blob$i"; done
git -C "$app" add -A
git -C "$app" -c user.name=b -c user.email=b@b commit -qm data
git -C "$app" repack -adq   # pre-packed, so every push sends the same pack

push_berth() {
  local start; start=$(now)
  (cd "$app" && GIT_SSH_COMMAND="ssh $ssh_opts" git push -q "ssh://berth@127.0.0.1:$berth_port/bulk-$1" data 2>/dev/null)
  elapsed "$start"
}
push_sshd() { # run unpackLimit
  local repo="$work/sshd-$1.git" start
  git init -q --bare "$repo"
  [ "$2" = default ] || git --git-dir="$repo" config receive.unpackLimit 1
  start=$(now)
  (cd "$app" && GIT_SSH_COMMAND="ssh $ssh_opts" git push -q "ssh://root@127.0.0.1:$sshd_port$repo" data)
  elapsed "$start"
  rm -rf "$repo"
}

: >"$work/berth.t"; : >"$work/sshd1.t"; : >"$work/sshd-default.t"
for i in $(seq 1 "$runs"); do
  push_berth "$i" >>"$work/berth.t"
  git --git-dir="$work/bench-data/repos/bulk-$i.git" rev-parse -q --verify refs/heads/data >/dev/null \
    || { echo "berth did not store the pushed branch" >&2; exit 1; }
  push_sshd "a$i" one >>"$work/sshd1.t"
  push_sshd "b$i" default >>"$work/sshd-default.t"
  rm -rf "$work/bench-data/repos/bulk-$i.git"
done
b=$(median <"$work/berth.t"); s1=$(median <"$work/sshd1.t"); sd=$(median <"$work/sshd-default.t")
echo "ssh_push: median of $runs pushes of ${size_mb} MB incompressible data (non-deploy branch), seconds"
printf '  %-46s %s   (runs: %s)\n' "berth (russh, receive.unpackLimit=1)" "$b" "$(tr '\n' ' ' <"$work/berth.t")"
printf '  %-46s %s   (runs: %s)\n' "OpenSSH sshd, receive.unpackLimit=1" "$s1" "$(tr '\n' ' ' <"$work/sshd1.t")"
printf '  %-46s %s   (runs: %s)\n' "OpenSSH sshd, git defaults" "$sd" "$(tr '\n' ' ' <"$work/sshd-default.t")"
echo "  ratio berth / sshd same settings: $(ratio "$b" "$s1")   (target <= 0.85)"
echo "  ratio berth / sshd git defaults:  $(ratio "$b" "$sd")"
echo "  berth server peak RSS: $(( $(rss_kb "$berth_pid" VmHWM) / 1024 )) MB"
