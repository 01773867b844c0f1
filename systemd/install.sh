#!/usr/bin/env bash
# Install ringest as a systemd service, in one command.
#
#   systemd/install.sh [--prefix ROOT] [--binary PATH] [--profile NAME]
#                      [--listen ADDR] [--sysctl] [--no-start] [--dry-run]
#   systemd/install.sh --uninstall [--purge] [--prefix ROOT] [--dry-run]
#
# Install: copies (or builds, without --binary) the binary to
# /usr/local/bin/ringest; creates the `ringest` system user (a sysusers.d
# entry applied with systemd-sysusers, or useradd); writes
# /etc/ringest/ringest.toml from tuning/NAME.toml with auth on and a newly
# generated token, printed once (an existing config is kept); validates it
# with `ringest check-config`; with --sysctl installs tuning/NAME.sysctl.conf
# as /etc/sysctl.d/60-ringest.conf; installs the unit and enables it
# (multi-user.target.wants link); on a live system, loads the sysctl
# fragment and starts the service.
#
# Uninstall: stops and disables the service, removes the binary, unit,
# drop-ins, sysctl fragment and sysusers entry. The data in /var/lib/ringest,
# the config and the user are kept unless --purge.
#
# --prefix ROOT  operate on a tree rooted at ROOT (image building, tests);
#                systemctl and sysctl are not run then.
# --dry-run      print every action, change nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source_root="$(dirname "$here")"

prefix=/
binary=
profile=default
listen=0.0.0.0:8086
with_sysctl=0
start=1
dry_run=0
uninstall=0
purge=0

usage() {
  sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    --profile) profile="${2:?--profile needs a name}"; shift 2 ;;
    --listen) listen="${2:?--listen needs an address}"; shift 2 ;;
    --sysctl) with_sysctl=1; shift ;;
    --no-start) start=0; shift ;;
    --dry-run) dry_run=1; shift ;;
    --uninstall) uninstall=1; shift ;;
    --purge) purge=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage 2 ;;
  esac
done
[ "$purge" -eq 0 ] || [ "$uninstall" -eq 1 ] || die "--purge only goes with --uninstall"

# Absolute prefix without a trailing slash ("" for the live system).
prefix="$(cd "$prefix" 2>/dev/null && pwd)" || die "--prefix: no such directory"
[ "$prefix" = / ] && prefix=""
live=0
[ -z "$prefix" ] && live=1
systemd_running=0
[ "$live" -eq 1 ] && [ -d /run/systemd/system ] && systemd_running=1

bin_path=/usr/local/bin/ringest
config_dir=/etc/ringest
config_path=$config_dir/ringest.toml
state_dir=/var/lib/ringest
unit_path=/etc/systemd/system/ringest.service
dropin_dir=/etc/systemd/system/ringest.service.d
wants_link=/etc/systemd/system/multi-user.target.wants/ringest.service
sysctl_path=/etc/sysctl.d/60-ringest.conf
sysusers_path=/etc/sysusers.d/ringest.conf

# Runs a command, or only shows it under --dry-run.
run() {
  echo "+ $*"
  [ "$dry_run" -eq 1 ] || "$@"
}

# Writes stdin to ROOT/PATH with MODE; under --dry-run shows the content.
write_file() {
  local path="$1" mode="$2" content
  content="$(cat)"
  echo "+ write $path (mode $mode)"
  if [ "$dry_run" -eq 1 ]; then
    printf '%s\n' "$content" | sed 's/^/    | /'
    return
  fi
  mkdir -p "$(dirname "$prefix$path")"
  printf '%s\n' "$content" > "$prefix$path"
  chmod "$mode" "$prefix$path"
}

# ringest's uid:gid in the target tree, when it exists there.
owner_ids() {
  local uid gid
  uid="$(awk -F: '$1 == "ringest" { print $3 }' "$prefix/etc/passwd" 2>/dev/null || true)"
  gid="$(awk -F: '$1 == "ringest" { print $3 }' "$prefix/etc/group" 2>/dev/null || true)"
  [ -n "$uid" ] && [ -n "$gid" ] && echo "$uid:$gid"
}

uninstall() {
  if [ "$systemd_running" -eq 1 ]; then
    run systemctl disable --now ringest.service || true
  fi
  run rm -f "$prefix$wants_link" "$prefix$unit_path" "$prefix$bin_path" \
    "$prefix$sysctl_path" "$prefix$sysusers_path"
  run rm -rf "$prefix$dropin_dir"
  if [ "$systemd_running" -eq 1 ]; then
    run systemctl daemon-reload
  fi
  if [ "$purge" -eq 1 ]; then
    run rm -rf "$prefix$state_dir" "$prefix$config_dir"
    if grep -q '^ringest:' "$prefix/etc/passwd" 2>/dev/null; then
      if [ "$live" -eq 1 ]; then
        run userdel ringest || echo "install.sh: could not remove user ringest" >&2
      else
        run userdel --root "$prefix" ringest || echo "install.sh: could not remove user ringest" >&2
      fi
    fi
    echo "ringest removed, with its data, configuration and user."
  else
    echo "ringest removed. Kept: $state_dir (data), $config_dir (configuration), user ringest."
    echo "Remove them too with: $0 --uninstall --purge${prefix:+ --prefix $prefix}"
  fi
}

if [ "$uninstall" -eq 1 ]; then
  uninstall
  exit 0
fi

# --- install -------------------------------------------------------------

profile_toml="$source_root/tuning/$profile.toml"
profile_sysctl="$source_root/tuning/$profile.sysctl.conf"
[ -f "$profile_toml" ] || die "unknown profile $profile (see $source_root/tuning/)"
if [ "$with_sysctl" -eq 1 ] && [ ! -f "$profile_sysctl" ]; then
  die "profile $profile has no sysctl fragment ($profile_sysctl); run without --sysctl"
fi

# 1. The binary.
if [ -z "$binary" ]; then
  command -v cargo >/dev/null || die "no --binary given and cargo is not installed"
  run cargo build --release --locked --manifest-path "$source_root/Cargo.toml"
  binary="$source_root/target/release/ringest"
fi
[ "$dry_run" -eq 1 ] || [ -x "$binary" ] || die "$binary is not an executable"
run install -D -m 0755 "$binary" "$prefix$bin_path"

# 2. The user: a sysusers.d entry, applied now.
write_file "$sysusers_path" 0644 <<'EOF'
# ringest service user (systemd/install.sh); home is the state directory.
u ringest - "ringest ingest server" /var/lib/ringest /usr/sbin/nologin
EOF
if command -v systemd-sysusers >/dev/null; then
  if [ "$live" -eq 1 ]; then
    run systemd-sysusers "$sysusers_path"
  else
    run systemd-sysusers --root "$prefix" "$prefix$sysusers_path"
  fi
elif ! grep -q '^ringest:' "$prefix/etc/passwd" 2>/dev/null; then
  if [ "$live" -eq 1 ]; then
    run useradd --system --user-group --home-dir "$state_dir" --no-create-home \
      --shell /usr/sbin/nologin ringest
  else
    run useradd --root "$prefix" --system --user-group --home-dir "$state_dir" \
      --no-create-home --shell /usr/sbin/nologin ringest
  fi
fi

# 3. Directories. systemd creates them too (StateDirectory=,
# ConfigurationDirectory=); making them here lets check-config run now.
run install -d -m 0750 "$prefix$state_dir"
run install -d -m 0755 "$prefix$config_dir"
ids="$(owner_ids || true)"
if [ -n "$ids" ] && [ "$(id -u)" -eq 0 ]; then
  run chown "$ids" "$prefix$state_dir"
fi

# 4. The configuration: the profile, the listen address, the data
# directory, auth on with one new token. An existing file is kept.
if [ -e "$prefix$config_path" ]; then
  echo "keeping the existing $config_path (its tokens stay valid)"
elif [ "$dry_run" -eq 1 ]; then
  echo "+ $bin_path token create --name admin   (the token is printed once)"
  echo "+ write $config_path (mode 0640): tuning/$profile.toml + listen $listen + [auth] enabled"
  echo "+ $bin_path check-config --config $config_path"
else
  token_output="$("$binary" token create --name admin --write '*' --read '*')" \
    || die "ringest token create failed"
  token="$(printf '%s\n' "$token_output" | sed -n 's/^token: //p')"
  [ -n "$token" ] || die "ringest token create printed no token"
  grant="$(printf '%s\n' "$token_output" | sed -n '/^\[\[auth.tokens\]\]/,$p')"
  server_keys="listen = \"$listen\"
data_dir = \"$state_dir\""
  profile_text="$(cat "$profile_toml")"
  if grep -q '^\[server\]' "$profile_toml"; then
    # Keys go right under the profile's own [server] table.
    profile_text="$(awk -v keys="$server_keys" '{ print } /^\[server\]/ { print keys }' "$profile_toml")"
    server_section=""
  else
    server_section="[server]
$server_keys
"
  fi
  tmp_config="$(mktemp)"
  trap 'rm -f "$tmp_config"' EXIT
  cat > "$tmp_config" <<EOF
# ringest configuration, written by systemd/install.sh from profile "$profile".
# Every key: tuning/reference.toml. Check changes with:
#   ringest check-config --config $config_path
# New tokens: ringest token create --name NAME --write DB --read DB

$server_section$profile_text

[auth]
# Every write and query needs a token.
enabled = true

$grant
EOF
  "$binary" check-config --config "$tmp_config" >/dev/null \
    || die "the generated configuration does not pass check-config (left in $tmp_config)"
  install -D -m 0640 "$tmp_config" "$prefix$config_path"
  echo "+ write $config_path (mode 0640, profile $profile, auth on)"
  if [ -n "$ids" ] && [ "$(id -u)" -eq 0 ]; then
    chown "root:${ids#*:}" "$prefix$config_path"
  fi
  echo
  echo "=== ringest admin token (shown once; only its hash is stored) ==="
  echo "$token"
  echo "=== use it as: Authorization: Token <token> ==="
  echo
fi

# 5. Kernel settings for the profile.
if [ "$with_sysctl" -eq 1 ]; then
  run install -D -m 0644 "$profile_sysctl" "$prefix$sysctl_path"
  if [ "$live" -eq 1 ]; then
    run sysctl --load="$sysctl_path"
  fi
fi

# 6. The unit, a locked-memory drop-in when this host needs more than the
# unit's LimitMEMLOCK, and the enable link.
run install -D -m 0644 "$here/ringest.service" "$prefix$unit_path"
# One shard per CPU (server.shards = 0); RINGEST_INSTALL_CPUS lets tests
# pretend to be a bigger host.
cpus="${RINGEST_INSTALL_CPUS:-$(nproc)}"
io_memory_bytes="$(sed -n 's/^io_memory_bytes = \([0-9]*\).*/\1/p' "$profile_toml")"
io_memory_bytes="${io_memory_bytes:-2097152}"
memlock_needed=$(( cpus * io_memory_bytes * 2 ))
if [ "$memlock_needed" -gt $(( 64 * 1024 * 1024 )) ]; then
  write_file "$dropin_dir/memlock.conf" 0644 <<EOF
# $cpus shards x $io_memory_bytes bytes of registered io_uring memory, doubled.
[Service]
LimitMEMLOCK=$memlock_needed
EOF
fi
run mkdir -p "$prefix$(dirname "$wants_link")"
run ln -sfn "$unit_path" "$prefix$wants_link"

if [ "$systemd_running" -eq 1 ]; then
  run systemctl daemon-reload
  if [ "$start" -eq 1 ]; then
    run systemctl restart ringest.service
  fi
fi
echo "ringest installed (profile $profile, listening on $listen, data in $state_dir)."
