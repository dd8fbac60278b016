#!/usr/bin/env bash
# Installs and starts berth on a Debian/Ubuntu host. Safe to run again: what is already right
# is left alone.
#
#   ./install.sh --admin-key ~/.ssh/id_ed25519.pub   # everything, and register the admin key
#   ./install.sh --deps-only                         # only the Docker engine, registry and git
#   ./install.sh --swarm ADDR --admin-key KEY        # also a swarm manager other nodes join at
#                                                    # ADDR (this host's address they reach)
#
# Settings (environment): BERTH_CONFIG_DIR (/etc/berth), BERTH_DATA_DIR (/var/lib/berth),
# BERTH_REGISTRY_PORT (5055), BERTH_SSH_PORT (2222), BERTH_PUBLIC_HOST (this host's name).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
config_dir=${BERTH_CONFIG_DIR:-/etc/berth}
data_dir=${BERTH_DATA_DIR:-/var/lib/berth}
registry_port=${BERTH_REGISTRY_PORT:-5055}
ssh_port=${BERTH_SSH_PORT:-2222}
public_host=${BERTH_PUBLIC_HOST:-$(hostname -f 2>/dev/null || hostname)}
bin=/usr/local/bin/berth
admin_key=""
deps_only=0
swarm_address=""

say() { printf -- '-----> %s\n' "$*"; }
die() { printf ' !     %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --admin-key) [ $# -ge 2 ] || die "--admin-key needs a public key file"; admin_key=$2; shift 2 ;;
    --deps-only) deps_only=1; shift ;;
    --swarm) [ $# -ge 2 ] || die "--swarm needs this host's address the swarm's nodes reach"; swarm_address=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "run as root (it installs packages and a service)"
if [ -n "$admin_key" ] && [ ! -r "$admin_key" ]; then die "cannot read the admin key $admin_key"; fi

systemd_running() { [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; }

# --- OS packages: only what is missing.
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v git >/dev/null || need+=(git)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v curl >/dev/null || need+=(curl)
command -v htpasswd >/dev/null || need+=(apache2-utils)
if [ ${#need[@]} -gt 0 ]; then
  say "Installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --- Docker engine.
if ! docker info >/dev/null 2>&1; then
  say "Starting the Docker engine"
  if systemd_running; then
    systemctl enable --now docker
  else
    mkdir -p "$data_dir"
    nohup dockerd >>"$data_dir/dockerd.log" 2>&1 &
  fi
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || die "the Docker engine did not start: see $data_dir/dockerd.log"
fi

# --- A swarm manager (--swarm ADDR): the nodes pull release images from the registry at
# ADDR:PORT (plain HTTP, so every engine lists it in insecure-registries, this one too: its own
# tasks pull by that name), and join the swarm this host manages at ADDR:2377.
registry_listen=127.0.0.1
# Run again without --swarm (an upgrade), a manager stays one: the address comes from the config.
if [ -z "$swarm_address" ] && [ -f "$config_dir/berth.toml" ]; then
  swarm_address=$(sed -n 's/^cluster_registry *= *"\(.*\):[0-9]*"/\1/p' "$config_dir/berth.toml" | head -1)
fi
if [ -n "$swarm_address" ]; then
  case "$swarm_address" in
    *[!0-9A-Za-z.:-]*|"") die "--swarm $swarm_address: give this host's address (an IP or a name) the nodes reach" ;;
  esac
  registry_listen=0.0.0.0
  cluster_registry="$swarm_address:$registry_port"
  daemon_json=/etc/docker/daemon.json
  if ! grep -q "\"$cluster_registry\"" "$daemon_json" 2>/dev/null; then
    if [ -s "$daemon_json" ] && [ "$(tr -d ' \t\n' <"$daemon_json")" != "{}" ]; then
      die "$daemon_json has settings of its own: add \"insecure-registries\": [\"$cluster_registry\"] to it, reload docker (systemctl reload docker) and run install.sh again"
    fi
    say "Letting this engine pull from the registry at $cluster_registry ($daemon_json)"
    mkdir -p /etc/docker
    printf '{\n  "insecure-registries": ["%s"]\n}\n' "$cluster_registry" >"$daemon_json"
    # insecure-registries is one of the settings dockerd reloads on SIGHUP: nothing restarts.
    if systemd_running; then systemctl reload docker; else kill -HUP "$(pidof dockerd)"; fi
    for _ in $(seq 1 40); do
      docker info --format '{{json .RegistryConfig.IndexConfigs}}' 2>/dev/null | grep -q "\"$cluster_registry\"" && break
      sleep 0.25
    done
  fi
  case "$(docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}')" in
    "active true") ;;
    active*) die "this engine is a swarm worker: berth runs on a manager" ;;
    *) say "Making this host a swarm manager at $swarm_address"
       docker swarm init --advertise-addr "$swarm_address" >/dev/null ;;
  esac
fi

# --- Registry on loopback with htpasswd auth: local users can neither read nor write images
# (the engine trusts 127.0.0.0/8 over plain HTTP). berth's own credentials live in a root-only
# file; releases are pulled back by digest.
mkdir -p "$config_dir" /var/lib/berth-registry
chmod 700 /var/lib/berth-registry
registry_credentials="$config_dir/registry.credentials"
registry_htpasswd="$config_dir/registry.htpasswd"
if [ ! -s "$registry_credentials" ]; then
  (umask 077 && printf 'berth:%s\n' "$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32)" >"$registry_credentials")
fi
chmod 600 "$registry_credentials"
registry_password=$(cut -d: -f2- "$registry_credentials")
if ! htpasswd -vb "$registry_htpasswd" berth "$registry_password" >/dev/null 2>&1; then
  (umask 077 && htpasswd -Bbc "$registry_htpasswd" berth "$registry_password" 2>/dev/null)
fi
chmod 600 "$registry_htpasswd"
registry_config="$config_dir/registry.yml"
wanted_registry=$(cat <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: /var/lib/berth-registry
  delete:
    enabled: true
http:
  addr: $registry_listen:$registry_port
auth:
  htpasswd:
    realm: berth
    path: $registry_htpasswd
YML
)
registry_answers() {
  case "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$registry_port/v2/" 2>/dev/null)" in
    200|401) return 0 ;;
    *) return 1 ;;
  esac
}
registry_changed=0
if [ "$(cat "$registry_config" 2>/dev/null)" != "$wanted_registry" ]; then
  printf '%s\n' "$wanted_registry" >"$registry_config"
  registry_changed=1
fi
if registry_answers && [ "$registry_changed" -eq 1 ]; then
  say "Restarting the registry with its new configuration"
  if systemd_running && systemctl is-active --quiet berth-registry; then
    systemctl restart berth-registry
  else
    pkill -f "docker-registry serve $registry_config" || true
    for _ in $(seq 1 40); do registry_answers || break; sleep 0.25; done
  fi
fi
if ! registry_answers; then
  say "Starting the registry on $registry_listen:$registry_port"
  if systemd_running; then
    install -m 644 "$here/systemd/berth-registry.service" /etc/systemd/system/berth-registry.service
    systemctl daemon-reload
    systemctl enable --now berth-registry
  else
    mkdir -p "$data_dir"
    nohup docker-registry serve "$registry_config" >>"$data_dir/registry.log" 2>&1 &
  fi
  for _ in $(seq 1 40); do registry_answers && break; sleep 0.25; done
  registry_answers || die "the registry did not start: see $data_dir/registry.log"
fi
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$registry_port/v2/")" = 401 ] \
  || die "the registry on 127.0.0.1:$registry_port answers without auth: stop it (an older one?) and run install.sh again"
[ "$deps_only" -eq 1 ] && { say "Docker engine and registry are running"; exit 0; }

# --- Build and install the binary (replaced only when it changed).
# A host without a Rust toolchain takes a binary built elsewhere for the same system, copied
# in as target/release/berth beside this script.
if command -v cargo >/dev/null; then
  say "Building berth (release)"
  (cd "$here" && cargo build --release --locked --quiet)
elif [ -x "$here/target/release/berth" ]; then
  say "No cargo here: installing the binary built elsewhere ($here/target/release/berth)"
else
  die "cargo is needed to build berth: install a Rust toolchain (1.85 or newer), or copy in a target/release/berth built for this system"
fi
changed=0
if ! cmp -s "$here/target/release/berth" "$bin"; then
  install -m 755 "$here/target/release/berth" "$bin.new" && mv "$bin.new" "$bin"
  changed=1
fi

# --- Default config, written once; the admin edits it afterwards.
config="$config_dir/berth.toml"
if [ ! -f "$config" ]; then
  # The router takes port 80 unless something already listens there.
  http_listen=0.0.0.0:80
  if (exec 3<>/dev/tcp/127.0.0.1/80) 2>/dev/null; then
    http_listen=off
    say "Port 80 is taken: the HTTP router stays off (set http_listen in $config to turn it on)"
  fi
  https_listen=0.0.0.0:443
  if (exec 3<>/dev/tcp/127.0.0.1/443) 2>/dev/null; then
    https_listen=off
    say "Port 443 is taken: HTTPS stays off (set https_listen in $config to turn it on)"
  fi
  default_target=docker
  [ -n "$swarm_address" ] && default_target=swarm
  say "Writing $config"
  cat >"$config" <<TOML
# berth server configuration; every key can also be set as BERTH_<KEY> in the environment.
data_dir = "$data_dir"
ssh_listen = "0.0.0.0:$ssh_port"
public_host = "$public_host"
publish_address = "0.0.0.0"
registry = "127.0.0.1:$registry_port"
registry_credentials = "$registry_credentials"
ready_timeout = 30
# Where apps run unless apps:set APP target=... says otherwise: docker, systemd or swarm.
default_target = "$default_target"
# The HTTP router: apps at http://APP.<base_domain> (point a wildcard DNS record at this host).
http_listen = "$http_listen"
# HTTPS with each app's certificate (certs:add, letsencrypt:enable), picked by SNI.
https_listen = "$https_listen"
# base_domain = "apps.example.com"   # default: public_host
# acme_email = "ops@example.com"     # contact given to Let's Encrypt
# Prometheus metrics at http://127.0.0.1:9180/metrics ("off" to disable).
admin_listen = "127.0.0.1:9180"
# access_log = "text"                # or "json", "off": <data_dir>/logs/access.log
TOML
fi
# A config written before the registry had auth gets its credentials (as its first line: a
# top-level key must come before any [table]); berth restarts to read them.
if grep -q '^registry = "127.0.0.1:' "$config" && ! grep -q '^registry_credentials' "$config"; then
  say "Giving berth the registry's credentials ($registry_credentials)"
  sed -i "1i registry_credentials = \"$registry_credentials\"" "$config"
  changed=1
fi
# A swarm manager names its images at the address the nodes reach (berth restarts to read it).
if [ -n "$swarm_address" ] && ! grep -q "^cluster_registry = \"$cluster_registry\"" "$config"; then
  say "Swarm nodes pull release images from $cluster_registry (cluster_registry in $config)"
  sed -i '/^cluster_registry *=/d' "$config"
  sed -i "1i cluster_registry = \"$cluster_registry\"" "$config"
  changed=1
fi
mkdir -p "$data_dir"
chmod 700 "$data_dir"

if [ -n "$admin_key" ]; then
  "$bin" keys add admin --role admin --key-file "$admin_key" --config "$config"
fi

# --- Start (or restart when the binary changed). Two processes: the data plane (the router and
# the apps' ports, which carry the apps' traffic) and the control plane (SSH, pushes,
# commands). An upgrade hands the data plane's sockets to the new binary (no connection is
# refused) and restarts the control plane, which lets the work under way finish first.
if systemd_running; then
  for unit in berth-dataplane.service berth.service; do
    if ! cmp -s "$here/systemd/$unit" "/etc/systemd/system/$unit"; then
      install -m 644 "$here/systemd/$unit" "/etc/systemd/system/$unit"
      systemctl daemon-reload
      changed=1
    fi
  done
  systemctl enable berth-dataplane berth >/dev/null
  if ! systemctl is-active --quiet berth-dataplane; then
    systemctl start berth-dataplane
  elif [ "$changed" -eq 1 ]; then
    say "Handing the data plane over to the new binary"
    systemctl reload berth-dataplane
  fi
  if [ "$changed" -eq 1 ] || ! systemctl is-active --quiet berth; then systemctl restart berth; fi
else
  pidfile="$data_dir/berth.pid"
  running=0
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then running=1; fi
  if [ "$running" -eq 1 ] && [ "$changed" -eq 1 ]; then
    # TERM: pushes and commands under way finish first (shutdown_timeout, 20 s by default).
    kill "$(cat "$pidfile")"; running=0
    for _ in $(seq 1 160); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.25; done
  fi
  # The data plane (started by the first `berth serve`, in a session of its own) takes the
  # new binary by handing its sockets over (SIGUSR2) before the control plane restarts.
  plane_pid=$(cat "$data_dir/run/dataplane.pid" 2>/dev/null || true)
  if [ "$changed" -eq 1 ] && [ -n "$plane_pid" ] && kill -0 "$plane_pid" 2>/dev/null; then
    say "Handing the data plane over to the new binary"
    kill -USR2 "$plane_pid"
    for _ in $(seq 1 120); do
      now=$(cat "$data_dir/run/dataplane.pid" 2>/dev/null || true)
      [ -n "$now" ] && [ "$now" != "$plane_pid" ] && break
      sleep 0.25
    done
  fi
  if [ "$running" -eq 0 ]; then
    say "Starting berth (no systemd here: background processes, logs in $data_dir/berth.log and $data_dir/logs/dataplane.log)"
    nohup "$bin" serve --config "$config" >>"$data_dir/berth.log" 2>&1 &
    echo $! >"$pidfile"
  fi
fi
port=$(sed -n 's/^ssh_listen *= *".*:\([0-9]*\)"/\1/p' "$config")
host=$(sed -n 's/^public_host *= *"\(.*\)"/\1/p' "$config")
for _ in $(seq 1 40); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.25; done
(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || die "berth is not listening on port $port: see $data_dir/berth.log"
say "berth is running. In your app's repository:"
echo "       git remote add berth ssh://berth@$host:$port/myapp"
echo "       git push berth main"
if [ -n "$swarm_address" ]; then
  say "Swarm manager at $swarm_address. On each node that joins (Debian: apt-get install docker.io):"
  echo "       put {\"insecure-registries\": [\"$cluster_registry\"]} in /etc/docker/daemon.json"
  echo "       and run: systemctl reload docker"
  echo "       then the line that ssh berth@$host -p $port nodes:join-command prints"
  echo "       Apps run on the swarm with: ssh berth@$host -p $port apps:set APP target=swarm"
fi
