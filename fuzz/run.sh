#!/usr/bin/env bash
# Coverage-guided fuzzing of the scanner's parsers (cargo-fuzz, libFuzzer).
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
# Needs a nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz
# (`cargo install cargo-fuzz`). CARGO_TARGET_DIR, when set, is where it builds (the first
# build takes about 17 minutes on two cores). Each target starts from its seed corpus in
# fuzz/corpus/<target> (test data of the repository); what libFuzzer adds goes to a
# scratch copy, so the committed corpus only changes by hand. A crash leaves its input in
# fuzz/artifacts/<target>/; reproduce with `cargo +nightly fuzz run <target> <file>`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
secs="${1:-60}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
  targets=(dpkg_status apk_installed rpm_header rpm_sqlite osv_record nvd_feed oci_manifest sbom
    tar_walk index_file versions app_metadata)
fi
cd "$here"
dir_args=()
[[ -n ${CARGO_TARGET_DIR:-} ]] && dir_args=(--target-dir "$CARGO_TARGET_DIR")
# -s none: the scanner is safe Rust; panics, overflows (debug assertions) and timeouts
# are what is looked for. -a: debug assertions on.
cargo +nightly fuzz build -s none -a "${dir_args[@]}"
status=0
for t in "${targets[@]}"; do
  scratch="$(mktemp -d)"
  cp -r "corpus/$t/." "$scratch/"
  mkdir -p "artifacts/$t"
  log="$(mktemp)"
  if nice -n 10 cargo +nightly fuzz run -s none -a "${dir_args[@]}" "$t" "$scratch" -- \
      -max_total_time="$secs" -max_len=262144 -rss_limit_mb=2048 -timeout=10 \
      -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=CRASH
    status=1
  fi
  execs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')"
  speed="$(grep -oE 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')"
  cov="$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1 || true)"
  echo "$t: $result, $execs executions, $speed exec/s, $cov"
  [[ $result == ok ]] || tail -n 30 "$log"
  rm -rf "$scratch" "$log"
done
exit $status
