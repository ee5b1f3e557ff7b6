#!/usr/bin/env bash
# Hand check (not CI): floe-nexmark's events == the official Java generator's,
# field by field but the contents of `extra` and `url`.
#   crates/floe-nexmark/java/check.sh [EVENTS=200000] [GENERATORS="1 3"] [SEED=0] [TPS=10000000]
# Needs a JDK and the Flink jars bench/nexmark/run.sh installs
# (~/.cache/flinkbench/flink-2.3.0, or FLINK_LIB_DIR).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
BENCH="${NEXMARK_BENCH_DIR:-$ROOT/../shared/bench/nexmark}"
[[ -d "$BENCH/src/main/java" ]] || BENCH=/work/shared/bench/nexmark
LIB="${FLINK_LIB_DIR:-$HOME/.cache/flinkbench/flink-2.3.0/pyflink/lib}"
EVENTS="${1:-200000}"; GENS="${2:-1 3}"; SEED="${3:-0}"; TPS="${4:-10000000}"
CP="$(ls "$LIB"/*.jar | tr '\n' ':')"
WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
SRCS=$(find "$BENCH/src/main/java/com/github/nexmark/flink" -name '*.java' \
  \( -path '*/generator/*' -o -path '*/model/*' -o -name NexmarkConfiguration.java -o -name NexmarkUtils.java \))
javac -nowarn -d "$WORK" -cp "$CP" $SRCS "$HERE/NexmarkDump.java"
cargo build -q --release -p floe-nexmark --example dump
DUMP="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/dump"
for g in $GENS; do
  java -cp "$WORK:$CP" NexmarkDump "$EVENTS" "$g" "$SEED" "$TPS" > "$WORK/java-$g.tsv"
  "$DUMP" "$EVENTS" "$g" "$SEED" "$TPS" > "$WORK/rust-$g.tsv"
  if cmp -s "$WORK/java-$g.tsv" "$WORK/rust-$g.tsv"; then
    echo "generators=$g: $(wc -l < "$WORK/rust-$g.tsv") events identical"
  else
    echo "generators=$g: DIFFERENT"; diff "$WORK/java-$g.tsv" "$WORK/rust-$g.tsv" | head -20; exit 1
  fi
done
