#!/usr/bin/env bash
# The python buildpack fixture: median seconds of a first push (dependencies installed from
# scratch: each run changes requirements.txt) and of a push that changes one line of app code
# (dependency layers reused), beside the same generated Dockerfile built by hand in the same run
# (`docker build`, then `docker run` and poll until it answers: the work berth does to go live;
# the plain `docker build` time is printed too). Medians of RUNS (default 5), alternating.
# Target: second push <= 1.2 x the by-hand rebuild.
source "$(dirname "$0")/lib.sh"
runs=${RUNS:-5}
setup_tools
bash "$root/tests/base_images.sh" >/dev/null
langs=berth-test/langs:bookworm
start_berth py "[buildpack_images]
python = \"$langs\""
berth() { ssh $ssh_opts -p "$berth_port" berth@127.0.0.1 "$@"; }

repo=$work/app
git init -q -b main "$repo"
cat >"$repo/app.py" <<'PY'
import http.server, os

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"version 0"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

http.server.HTTPServer(("", int(os.environ["PORT"])), Handler).serve_forever()
PY
commit_all() { git -C "$repo" add -A; git -C "$repo" -c user.name=b -c user.email=b@b commit -qm "$1"; }
set_version() { sed -i "s/version [0-9a-z-]*/version $1/" "$repo/app.py"; }
wait_for() { for _ in $(seq 1 1500); do [ "$(curl -fsS "$1" 2>/dev/null)" = "$2" ] && return 0; sleep 0.02; done; echo "never answered: $1" >&2; exit 1; }

berth_push() { # app expected-body -> seconds
  local start url
  start=$(now)
  (cd "$repo" && GIT_SSH_COMMAND="ssh $ssh_opts" git push "ssh://berth@127.0.0.1:$berth_port/$1" main >"$work/transcript" 2>&1) || true
  url=$(sed -n 's/.* is live at \(http[^ ]*\).*/\1/p' "$work/transcript")
  [ -n "$url" ] || { echo "berth push failed: $(tail -5 "$work/py.log")" >&2; exit 1; }
  wait_for "$url" "$2"
  elapsed "$start"
}

hand_build() { # tag expected-body -> "build-seconds total-seconds"
  local start built ctx=$work/ctx port cid
  rm -rf "$ctx"; mkdir -p "$ctx"
  git -C "$repo" archive HEAD | tar -x -C "$ctx"
  cp "$work/Dockerfile" "$ctx/Dockerfile"
  start=$(now)
  docker build -q -t "$1" "$ctx" >/dev/null
  built=$(elapsed "$start")
  cid=$(docker run -d --init -e PORT=5000 -p 127.0.0.1::5000 --label "berth.bench=$$" "$1")
  port=$(docker port "$cid" 5000/tcp | head -1 | sed 's/.*://')
  wait_for "http://127.0.0.1:$port/" "$2"
  echo "$built $(elapsed "$start")"
  docker rm -f "$cid" >/dev/null
}

: >"$work/first"; : >"$work/second"; : >"$work/hand_first"; : >"$work/hand_second"
for run in $(seq 1 "$runs"); do
  app="py-bench-$$-$run"; bench_apps="${bench_apps:-} $app"
  echo "# dependencies of run $run $$" >"$repo/requirements.txt"
  set_version "first-$run"; commit_all "run $run"
  berth_push "$app" "version first-$run" >>"$work/first"
  berth buildpacks:detect "$app" --dockerfile >"$work/Dockerfile"
  hand_build "hand-$$:first" "version first-$run" | awk '{print $2 > "/dev/stderr"; print $1}' 2>>"$work/hand_first" >>"$work/hand_first_build"
  set_version "second-$run"; commit_all "code only $run"
  berth_push "$app" "version second-$run" >>"$work/second"
  # The dependency install step must have come from the cache.
  sed -n '/RUN pip install -r requirements.txt/,/Step /p' "$work/transcript" | grep -q "Using cache" && reused=$((${reused:-0} + 1))
  hand_build "hand-$$:second" "version second-$run" | awk '{print $2 > "/dev/stderr"; print $1}' 2>>"$work/hand_second" >>"$work/hand_second_build"
done
docker rmi -f "hand-$$:first" "hand-$$:second" >/dev/null 2>&1 || true
f=$(median <"$work/first") s=$(median <"$work/second")
hf=$(median <"$work/hand_first") hs=$(median <"$work/hand_second")
hfb=$(median <"$work/hand_first_build") hsb=$(median <"$work/hand_second_build")
echo "python buildpack (median of $runs):"
echo "  first push   berth $f s   by hand (build+run+answer) $hf s (docker build alone $hfb s)   ratio $(ratio "$f" "$hf")"
echo "  code change  berth $s s   by hand (build+run+answer) $hs s (docker build alone $hsb s)   ratio $(ratio "$s" "$hs")   (target <= 1.2)"
echo "  dependency layer reused by the code-change push: ${reused:-0}/$runs runs"
