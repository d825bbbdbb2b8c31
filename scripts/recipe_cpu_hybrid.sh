#!/usr/bin/env bash
# The best CPU recipe, end to end: configs/cpu-hybrid-state-five-sasrecs.yaml's steps in order, each
# skipped when its output is already there, so a killed run resumes at the step it was in (each step
# resumes or restarts on its own terms). Run it from the repository root after `bash scripts/setup.sh`:
#
#     bash scripts/recipe_cpu_hybrid.sh            # about 1.8 hours on 2 cores; writes under runs/
#
# Every step's wall-clock seconds are appended to runs/recipe_times.tsv. At the end it prints the test
# table's row that --choose-on-valid picked and its ratio to SASRec (runs/hybrid-state-r32-400/eval/).
set -euo pipefail

M6GEN=${M6GEN:-$([ -x .venv/bin/m6gen ] && echo .venv/bin/m6gen || echo m6gen)}
TORCHRUN=${TORCHRUN:-$([ -x .venv/bin/torchrun ] && echo .venv/bin/torchrun || echo torchrun)}
RUN=runs/hybrid-state-r32-400
TIMES=runs/recipe_times.tsv

if [ ! -f configs/cpu-hybrid-state-five-sasrecs.yaml ]; then
    echo "error: run this from the m6gen repository root (configs/cpu-hybrid-state-five-sasrecs.yaml not found)" >&2
    exit 2
fi
mkdir -p runs

# step NAME "DONE_FILE..." COMMAND...: run COMMAND unless every DONE_FILE exists, and log its seconds.
step() {
    local name=$1 done_files=$2 f missing=0
    shift 2
    for f in $done_files; do [ -e "$f" ] || missing=1; done
    if [ $missing = 0 ]; then
        echo "== $name: done already ($done_files)"
        return
    fi
    echo "== $name"
    local start=$SECONDS
    "$@"
    printf '%s\t%s\t%d\n' "$(date -u +%FT%TZ)" "$name" $((SECONDS - start)) >>"$TIMES"
}

# Two SASRec seeds at a time, one thread each: on 2 cores that beats one after the other at two threads.
sasrec_pair() {
    local pids=() s
    for s in "$@"; do
        [ -e "runs/sasrec-seeds/seed$s/baselines.json" ] && continue
        "$M6GEN" baselines --methods SASRec --sasrec-seed "$s" --threads 1 --out "runs/sasrec-seeds/seed$s" &
        pids+=($!)
    done
    local pid failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done  # both finish before a failure stops the recipe
    return "$failed"
}

# The eval reuses the run's own SASRec (seed 0, the one its tokens come from) rather than training another.
eval_readouts() {
    mkdir -p "$RUN/eval"
    [ -e "$RUN/eval/baselines" ] || cp -r runs/hybrid/baselines "$RUN/eval/"
    "$TORCHRUN" --nproc_per_node 2 -m m6gen eval --threads 1 --config configs/eval-readout.yaml \
        --baselines Pop,SASRec,EASE --decode-blend 10 --plain-beams false --model "$RUN" --out "$RUN/eval"
}

step "SASRec seed 0 (the run's tokens)" runs/hybrid/baselines/baselines.json \
    "$M6GEN" baselines --out runs/hybrid/baselines
step "SASRec seeds 1 and 2" "runs/sasrec-seeds/seed1/baselines.json runs/sasrec-seeds/seed2/baselines.json" \
    sasrec_pair 1 2
step "SASRec seeds 3 and 4" "runs/sasrec-seeds/seed3/baselines.json runs/sasrec-seeds/seed4/baselines.json" \
    sasrec_pair 3 4
step "EASE" runs/ease/baselines.json "$M6GEN" baselines --methods EASE --out runs/ease
step "train" "$RUN/train_summary.json" "$M6GEN" train --config configs/cpu-hybrid-state-five-sasrecs.yaml
step "fit-readout" "$RUN/readout.safetensors" \
    "$M6GEN" fit-readout --config configs/fit-readout-sasrecs-ease.yaml --model "$RUN"
step "eval" "$RUN/eval/eval_test_vs_sasrec.md" eval_readouts

echo "== step times (seconds), $TIMES:"
cat "$TIMES"
echo "== test, the row chosen on validation against SASRec ($RUN/eval/eval_test_vs_sasrec.md):"
grep -E '^\| method|chosen on valid' "$RUN/eval/eval_test_vs_sasrec.md"
