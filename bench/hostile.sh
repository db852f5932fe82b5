#!/usr/bin/env bash
# Peak memory and time of the release CLI on the worst input of each hostile class
# (issue 14): crafted version strings, a crafted index, archive and decompression bombs,
# oversized manifests and SBOMs, dpkg status files, overlapping and nested jars, files full
# of secrets, OSV records with huge range counts, hard links.
#
#   bench/hostile.sh [IMAGEWARDEN_BINARY] [RUNS]
#
# The inputs are written by the ignored test `write_worst_inputs`
# (scanner/tests/hostile_inputs.rs) into $IW_HOSTILE_DIR (default: a temporary directory,
# ~500 MB, removed at the end). Each case runs RUNS times (default 3) under
# /usr/bin/time; the table gives the median wall time, the largest peak RSS, the exit
# status, the bytes written to stderr and the first line of the CLI's error, if any.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
bin="${1:-$target_dir/release/imagewarden}"
runs="${2:-3}"
[[ -x $bin ]] || { echo "no CLI at $bin: cargo build --release -p imagewarden-scanner" >&2; exit 2; }
out="${IW_HOSTILE_DIR:-}"
if [[ -z $out ]]; then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
fi
if [[ ! -f $out/cases.tsv ]]; then
  test_bin="$(cd "$root" && cargo test -q -p imagewarden-scanner --test hostile_inputs --no-run \
    --message-format=json 2>/dev/null | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
  (cd "$root/scanner" && IW_HOSTILE_DIR="$out" "$test_bin" --ignored --quiet >/dev/null)
fi
cd "$root"
export NO_COLOR=1
printf '%-26s %7s %12s %5s %8s  %s\n' case "wall s" "peak RSS MB" exit "stderr B" "first error line"
while IFS=$'\t' read -r name what args; do
  read -r -a argv <<<"${args//@/$out}"
  walls=()
  peak=0
  for ((i = 0; i < runs; i++)); do
    err="$(mktemp)"
    set +e
    /usr/bin/time -f '%e %M' -o "$err.time" "$bin" "${argv[@]}" >/dev/null 2>"$err"
    code=$?
    set -e
    read -r wall rss < <(tail -n 1 "$err.time")
    walls+=("$wall")
    ((rss > peak)) && peak=$rss
    first="$(grep -m 1 -iE 'error|warn|refused|exceed' "$err" | cut -c 1-110 || true)"
    stderr_bytes=$(wc -c <"$err")
    rm -f "$err" "$err.time"
  done
  median="$(printf '%s\n' "${walls[@]}" | sort -g | sed -n "$(((runs + 1) / 2))p")"
  printf '%-26s %7s %12d %5s %8d  %s\n' "$name" "$median" "$((peak / 1024))" "$code" "$stderr_bytes" "$first"
done <"$out/cases.tsv"
