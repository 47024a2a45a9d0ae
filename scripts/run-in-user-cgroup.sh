#!/usr/bin/env bash
# Run `spillway run` under a real memory limit as a non-root user on a pure cgroup v2 host with
# systemd: a transient user scope with MemoryMax=SIZE, MemorySwapMax=0 and Delegate=yes.
#
#   scripts/run-in-user-cgroup.sh SIZE [spillway run arguments...]
#   scripts/run-in-user-cgroup.sh 1408M cache-pressure --out runs/cp
#   scripts/run-in-user-cgroup.sh 2G my.toml --cgroup=400m   # nested: spillway supervises a child
#
# SIZE is systemd's syntax (K/M/G/T, base 1024), e.g. the `container` of `spillway layout --json`
# in MiB with an M. Without --cgroup, spillway runs inside the scope itself and its timeline reads
# the scope's memory.current and memory.pressure; a kernel OOM kill ends it with exit 137. With
# --cgroup, spillway (alone in the delegated scope) moves itself into a leaf, enables +memory and
# runs the executor in a child cgroup it supervises, reporting an OOM kill in report.json.
#
# systemd ignores MemoryMax silently when the user manager was not delegated the memory
# controller, so this script checks the delegation first and reads memory.max back from inside
# the scope before spillway starts. Root and cgroup v1/hybrid hosts: use `spillway run --cgroup`
# directly (there is no user delegation on v1).
set -euo pipefail

die() {
    echo "run-in-user-cgroup: $*" >&2
    exit 2
}

[ $# -ge 1 ] || die "usage: $0 SIZE [spillway run arguments...]"
size=$1
shift

spillway=${SPILLWAY:-}
if [ -z "$spillway" ]; then
    if command -v spillway >/dev/null 2>&1; then
        spillway=$(command -v spillway)
    elif [ -x "$(dirname "$0")/../target/release/spillway" ]; then
        spillway=$(cd "$(dirname "$0")/../target/release" && pwd)/spillway
    else
        die "no spillway binary: set SPILLWAY=/path/to/spillway or run cargo build --release"
    fi
fi

command -v systemd-run >/dev/null 2>&1 || die "systemd-run is not installed (this script needs systemd)"
fstype=$(stat -fc %T /sys/fs/cgroup 2>/dev/null || echo unknown)
[ "$fstype" = cgroup2fs ] ||
    die "/sys/fs/cgroup is $fstype, not a pure cgroup v2 mount: user delegation needs cgroup v2 (as root, use 'spillway run --cgroup' instead)"

uid=$(id -u)
manager=/sys/fs/cgroup/user.slice/user-$uid.slice/user@$uid.service
if [ ! -r "$manager/cgroup.controllers" ]; then
    die "no user manager cgroup at $manager (is 'systemd --user' running? try 'loginctl enable-linger')"
fi
if ! grep -qw memory "$manager/cgroup.controllers"; then
    cat >&2 <<MSG
run-in-user-cgroup: the systemd user manager is not delegated the 'memory' controller
  ($manager/cgroup.controllers: $(cat "$manager/cgroup.controllers"))
  so MemoryMax would be ignored. As root, delegate it and re-login:
    mkdir -p /etc/systemd/system/user@.service.d
    printf '[Service]\nDelegate=cpu cpuset io memory pids\n' > /etc/systemd/system/user@.service.d/delegate.conf
    systemctl daemon-reload
MSG
    exit 2
fi

# Inside the scope: read back our own memory.max, refuse to run unlimited, then exec spillway.
# shellcheck disable=SC2016
inner='
cg=/sys/fs/cgroup$(sed -n "s/^0:://p" /proc/self/cgroup)
max=$(cat "$cg/memory.max" 2>/dev/null || echo missing)
if [ "$max" = max ] || [ "$max" = missing ]; then
    echo "run-in-user-cgroup: memory.max of $cg is $max: the limit was not applied" >&2
    exit 2
fi
echo "run-in-user-cgroup: running in $cg with memory.max=$max bytes, swap.max=$(cat "$cg/memory.swap.max" 2>/dev/null || echo n/a)" >&2
exec "$@"
'
set +e
systemd-run --user --scope --quiet --collect \
    -p MemoryMax="$size" -p MemorySwapMax=0 -p Delegate=yes \
    -- sh -c "$inner" sh "$spillway" run "$@"
status=$?
set -e
if [ "$status" -eq 137 ]; then
    echo "run-in-user-cgroup: spillway was killed (exit 137) — most likely by the kernel OOM killer at MemoryMax=$size; see 'journalctl --user -n 20'" >&2
fi
exit "$status"
