#!/usr/bin/env bash
# Qualification: one command that runs the qualification matrix (every technique of the
# registry in the layouts that fit the world size; suites/cases/qualification.json) on the
# chosen backend, several times, and ends with the report page and a one-line verdict.
#
#   scripts/qualify.sh [--np 4] [--repeats 3] [--backend cpu|cuda] [--suite qualification]
#                      [--out results/qualification/<backend>-<np>ranks-<date>]
#
# Each repeat is one `parabench run` of the whole suite (progress per case, with the time
# remaining); a failing case does not stop the others, nor does a failing repeat stop the
# next. At the end, in the output folder: run-<k>.json (every repeat), summary.json and
# summary.md (per case: the statuses, and the median step time's median, min, max and
# coefficient of variation over the repeats; the environment of the first repeat),
# report.html and report.md (the repeats side by side). The last line is the verdict:
# "qualification: PASS ..." (exit 0) or "qualification: FAIL ..." (exit 1).
# PB_PARABENCH=path uses that binary and skips the bootstrap (tests).
set -uo pipefail
cd "$(dirname "$0")/.."
np=4 repeats=3 backend=cpu suite=qualification out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --np) np=$2; shift 2 ;;
    --repeats) repeats=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --suite) suite=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "qualify: error: unknown argument '$1' (--np, --repeats, --backend, --suite, --out)" >&2; exit 2 ;;
  esac
done
[[ "$np" =~ ^[1-9][0-9]*$ ]] || { echo "qualify: error: --np $np is not a positive integer" >&2; exit 2; }
[[ "$repeats" =~ ^[1-9][0-9]*$ ]] || { echo "qualify: error: --repeats $repeats is not a positive integer" >&2; exit 2; }
[ "$backend" = cpu ] || [ "$backend" = cuda ] || { echo "qualify: error: --backend cpu or cuda, got '$backend'" >&2; exit 2; }
if [ -n "${PB_PARABENCH:-}" ]; then pb=$PB_PARABENCH; else scripts/bootstrap.sh || exit 2; pb=${PB_BUILD_DIR:-build}/bin/parabench; fi
[ -n "$out" ] || out=results/qualification/$backend-${np}ranks-$(date -u +%Y-%m-%d)
mkdir -p "$out" || exit 2
py=/usr/bin/python3; [ -x "$py" ] || py=python3

start=$(date +%s)
for k in $(seq 1 "$repeats"); do
  now=$(date +%s); done_s=$((now - start))
  eta=""; [ "$k" -gt 1 ] && eta=", about $((done_s / (k - 1) * (repeats - k + 1)))s left"
  echo "qualify: repeat $k of $repeats (${done_s}s so far$eta)" >&2
  scripts/mpirun.sh "$np" "$pb" run --suite "$suite" --backend "$backend" --skip-larger --out "$out/run-$k.json" \
    > /dev/null
  echo "qualify: repeat $k exited $?" >&2
done
runs=()
for k in $(seq 1 "$repeats"); do [ -s "$out/run-$k.json" ] && runs+=("$out/run-$k.json"); done
[ ${#runs[@]} -gt 0 ] || { echo "qualification: FAIL (no repeat wrote its results)"; exit 1; }
"$pb" report "${runs[@]}" --html "$out/report.html" --md "$out/report.md" || echo "qualify: the report page failed" >&2
"$py" scripts/qualify_summary.py "$out" "$repeats" "${runs[@]}"
