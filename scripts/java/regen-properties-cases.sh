#!/usr/bin/env bash
# Regenerates tests/data/java_properties_cases.txt: what java.util.Properties.load(Reader) makes
# of each case in scripts/java/PropertiesProbe.java (hand cases, then seeded random ones).
# Needs a JDK 17 or later on the PATH (single-file source launch; nothing is built or kept).
# tests/java_properties.rs checks spillway's parser against every row.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v java >/dev/null 2>&1; then
    echo "java is required (e.g. apt-get install openjdk-17-jdk-headless)" >&2
    exit 1
fi
out=tests/data/java_properties_cases.txt
tmp="$(mktemp "$out.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
java scripts/java/PropertiesProbe.java >"$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "$out: $(grep -c '^case ' "$out") cases"
