#!/usr/bin/env bash
# The main job. For now: a reference training run of the default Llama-style config
# (H=256, A=8, G=4, F=768, V=2048, L=4; B=4, S=128) printing per-step loss and step time.
# Extra arguments go to parabench-ref (see `build/bin/parabench-ref --help`), e.g.
#   scripts/run.sh --steps 20 --experts 8 --topk 2 --dump out/run1
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec "${PB_BUILD_DIR:-build}/bin/parabench-ref" --steps 10 "$@"
