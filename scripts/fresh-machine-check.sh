#!/usr/bin/env bash
# Checks that spillway builds and runs on a machine with nothing installed but Rust: no
# pkg-config, no fontconfig or freetype (headers, .pc files or libraries) and no system fonts.
#
#     sudo scripts/fresh-machine-check.sh
#
# Nothing is uninstalled: the script re-runs itself in a private mount namespace (unshare -m)
# where those files are hidden (tmpfs over the font and header folders, /dev/null bound over
# pkg-config and the libraries), so other builds on the machine are not affected, and the mounts
# vanish with the namespace. In there it runs the README's commands from a new target folder
# (removed at the end; set CARGO_TARGET_DIR to reuse one):
#
#   cargo run --release -- run      (into a temporary --out folder, then its PNGs are checked)
#   cargo test --no-run             (every test target builds)
#   cargo test --test cli_run       (the CLI end to end, plots included)
#
# and checks that the binary links only the C library family and that font-kit is not in the
# dependency graph. Prints one line per check and exits non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${SPILLWAY_FRESH_INSIDE:-}" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: needs root (to make a private mount namespace with unshare -m)" >&2
        exit 2
    fi
    command -v unshare >/dev/null || { echo "error: unshare (util-linux) is required" >&2; exit 2; }
    exec unshare -m --propagation private env SPILLWAY_FRESH_INSIDE=1 bash "$0" "$@"
fi

libdir=/usr/lib/x86_64-linux-gnu
[ -d "$libdir" ] || libdir=/usr/lib
hidden=()
# Folders: a fresh machine has none of these.
for d in /usr/share/fonts /usr/local/share/fonts "$HOME/.fonts" "$HOME/.local/share/fonts" \
    /etc/fonts /usr/include/fontconfig /usr/include/freetype2 "$libdir/pkgconfig" \
    /usr/share/pkgconfig; do
    if [ -d "$d" ]; then
        mount -t tmpfs -o ro,size=4k none "$d"
        hidden+=("$d")
    fi
done
# Files: pkg-config (every name it goes by) and the font libraries.
for f in /usr/bin/pkg-config /usr/bin/pkgconf /usr/bin/*-pkg-config "$libdir"/libfontconfig* \
    "$libdir"/libfreetype*; do
    if [ -e "$f" ]; then
        mount --bind /dev/null "$f"
        hidden+=("$f")
    fi
done
echo "hidden in this mount namespace: ${hidden[*]}"

failed=0
check() { # NAME COMMAND...: runs COMMAND, prints PASS/FAIL NAME
    local name=$1
    shift
    if "$@"; then
        echo "PASS  $name"
    else
        echo "FAIL  $name"
        failed=1
    fi
}

# The hiding itself: no usable pkg-config, no fontconfig, no font files.
check "pkg-config unusable" bash -c '! pkg-config --exists fontconfig 2>/dev/null'
check "no font files" bash -c \
    '[ -z "$(find /usr/share/fonts /usr/local/share/fonts -type f 2>/dev/null | head -1)" ]'
check "no fontconfig/freetype library" bash -c \
    "! python3 -c 'import ctypes; ctypes.CDLL(\"libfontconfig.so.1\")' 2>/dev/null \
     && ! python3 -c 'import ctypes; ctypes.CDLL(\"libfreetype.so.6\")' 2>/dev/null"

work=$(mktemp -d /tmp/spillway-fresh-XXXXXX)
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
    export CARGO_TARGET_DIR="$work/target"
    echo "building from scratch in $CARGO_TARGET_DIR"
else
    echo "reusing CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
fi
trap 'rm -rf "$work"' EXIT

# `cargo tree -i font-kit` fails when font-kit is not in the graph, but so it would for any other
# reason: list the whole graph (every target, dev and build dependencies too) and look in it.
check "no font-kit, fontconfig or freetype crate in the dependency graph" bash -c \
    'tree=$(cargo tree --target all -e normal,build,dev --prefix none --format "{p}") &&
     [ -n "$tree" ] && ! grep -qiE "^(font-kit|[a-z-]*fontconfig|freetype)" <<<"$tree"'
check "cargo run --release -- run" \
    cargo run --release -q -- run --out "$work/run"
check "the run wrote its PNG plots" bash -c \
    "for f in timeline.png spill_per_task.png; do
         head -c 8 \"$work/run/\$f\" | od -An -c | grep -q 'P   N   G' || exit 1
     done"
bin="$CARGO_TARGET_DIR/release/spillway"
echo "ldd $bin:"
ldd "$bin" | sed 's/^/      /'
check "the binary links only the C library" bash -c \
    "! ldd '$bin' | grep -vE '^\s*(linux-vdso|libc\.so|libm\.so|libgcc_s\.so|libpthread\.so|libdl\.so|librt\.so|/lib64/ld-linux|/lib/ld-linux)' | grep -q ."
check "cargo test --no-run" cargo test -q --no-run
check "cargo test --test cli_run" cargo test -q --test cli_run

if [ "$failed" -ne 0 ]; then
    echo "fresh-machine check: FAILED"
    exit 1
fi
echo "fresh-machine check: ok"
