#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/fuzz_targets, each for FUZZ_SECONDS (default 20).
#
#   scripts/fuzz.sh                       every target, 20 s each (what CI runs)
#   FUZZ_SECONDS=3600 scripts/fuzz.sh wireguard_decap config_load   longer, chosen targets
#
# Starts from the committed seeds in fuzz/corpus/<target>/ and keeps what it discovers in
# fuzz/target/fuzz-corpus/<target>/ (ignored by git), so repeated runs on one machine pick
# up where the last one stopped. Exits non-zero if any target crashed, timed out or ran
# out of memory, printing the artifact that reproduces it:
#   cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <artifact>
#
# Toolchain: the machine's stable toolchain with RUSTC_BOOTSTRAP=1 (cargo-fuzz needs
# nightly-only flags such as -Zsanitizer=address, and stable ships the sanitizer runtime);
# no nightly toolchain is needed, which matters where none can be installed. Set
# FUZZ_TOOLCHAIN=nightly to use an installed nightly instead. cargo-fuzz itself is
# installed from crates.io if missing. FUZZ_SANITIZER (default address) is passed to
# cargo-fuzz's --sanitizer: `none` builds and runs faster, and still catches every panic.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds=${FUZZ_SECONDS:-20}
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds == 0)); then
    echo "FUZZ_SECONDS must be a positive number of seconds, not '$seconds'" >&2
    exit 2
fi

command -v cargo >/dev/null || {
    echo "cargo is missing: install Rust with rustup (https://rustup.rs)" >&2
    exit 1
}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cargo_fuzz=(cargo)
if [[ -n ${FUZZ_TOOLCHAIN:-} ]]; then
    cargo_fuzz+=("+$FUZZ_TOOLCHAIN")
else
    export RUSTC_BOOTSTRAP=1
fi
cargo_fuzz+=(fuzz)
sanitizer=(--sanitizer "${FUZZ_SANITIZER:-address}")

if (($#)); then
    targets=("$@")
else
    targets=()
    for file in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$file" .rs)")
    done
fi
for target in "${targets[@]}"; do
    if [[ ! -f fuzz/fuzz_targets/$target.rs ]]; then
        echo "no fuzz target '$target' (fuzz/fuzz_targets/$target.rs)" >&2
        exit 2
    fi
done

cd fuzz
echo "==> building the fuzz targets (${cargo_fuzz[*]} build ${sanitizer[*]})"
"${cargo_fuzz[@]}" build "${sanitizer[@]}"

failed=()
for target in "${targets[@]}"; do
    corpus=$root/fuzz/target/fuzz-corpus/$target
    log=$root/fuzz/target/fuzz-logs/$target.log
    artifacts=$root/fuzz/artifacts/$target
    mkdir -p "$corpus" "$(dirname "$log")" "$root/fuzz/corpus/$target"
    echo "==> $target: ${seconds}s"
    status=0
    # New inputs go to the first corpus directory, so the committed seeds stay as they are.
    # -timeout: any single input slower than 10 s is a hang, reported as a failure.
    "${cargo_fuzz[@]}" run "${sanitizer[@]}" "$target" "$corpus" "$root/fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    coverage=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
    if ((status == 0)); then
        echo "    ok: ${runs:-?} runs, ${coverage:-cov: ?}"
        continue
    fi
    failed+=("$target")
    echo "    FAILED (exit $status); full log: $log" >&2
    # The cause (panic message, sanitizer report, timeout or OOM), without cargo-fuzz's own
    # backtrace; the whole log is kept for the rest.
    cause=$(grep -E -A3 "panicked at|==[0-9]+==ERROR|SUMMARY:|ALARM: working on the last Unit|out-of-memory|^error" "$log" | head -n 30 || true)
    if [[ -z $cause ]]; then
        cause=$(tail -n 30 "$log")
    fi
    mapfile -t lines <<<"$cause"
    printf '    | %s\n' "${lines[@]}" >&2
    found=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log")
    if [[ -n $found ]]; then
        while IFS= read -r artifact; do
            [[ $artifact == /* ]] || artifact=$root/fuzz/${artifact#./}
            echo "    artifact: $artifact" >&2
        done <<<"$found"
        repro="${cargo_fuzz[*]} run ${sanitizer[*]} $target <artifact>"
        [[ -n ${RUSTC_BOOTSTRAP:-} ]] && repro="RUSTC_BOOTSTRAP=1 $repro"
        echo "    reproduce: cd fuzz && $repro" >&2
    else
        echo "    no artifact was written (build or setup failure?); artifacts dir: $artifacts" >&2
    fi
done

if ((${#failed[@]})); then
    echo "fuzzing FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzzing ok: ${#targets[@]} target(s), ${seconds}s each"
