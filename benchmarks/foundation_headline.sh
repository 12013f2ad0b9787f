#!/bin/sh
# The foundation benchmark's headline grid on a 2-core CPU, in about 75 minutes: two lanes (one core each, one
# torch thread) over halves of the 19 new-speaker voices, then one merge. Per voice: base; at 50 enrollment
# utterances the product's linear and FFN heads, a zero-started linear head on the trained and on a random
# controller, Houlsby adapters; at 20 and 100 the product's linear head. LoRA and full fine-tuning on the 4 quick
# voices. The u = 0 and decoder-layer variants run on their committed controllers (benchmarks/results/controllers/);
# `make bench-foundation` measures them (and trains such a controller when it is missing, ~25 min).
# Every measurement is keyed (backbone, controller, recipe, system), so a rerun only measures what is missing,
# and the merged store is committed as benchmarks/results/foundation_measurements.jsonl. Each trained system also
# faces the product's promotion gate on 20 more eval utterances per voice (the report's "served" numbers);
# measurements stored before the gate existed are trained again only with --regate (BENCH_ARGS=--regate).
# Budgets are in reference seconds: each invocation times a reference step and scales them to this machine's
# speed (hra/bench/speed.py; about +-10 %), so runs on different machines compare.
# Decoding is the product's (beam 5 since 2026-12-02; it is in the measurement keys): BENCH_ARGS="--beam-size 1"
# measures greedy, as runs A-C did (the committed store keeps their measurements under greedy keys).
# Usage: benchmarks/foundation_headline.sh   (last line: the headline JSON)
set -eu
PY=${PY:-.venv/bin/python}
WORK=${WORK:-var/bench_headline}
RESULTS=benchmarks/results
LANE1=espeak-pt-br,atyp-pl-breathy-telephone,flite-awb,espeak-da,espeak-it,espeak-ro,espeak-id,atyp-festival-kal-slow-tremor,espeak-pt-br-f3,espeak-en-caribbean-f4
LANE2=espeak-hu,espeak-en-lancaster,festival-ked,espeak-pl,espeak-tr,espeak-cs,espeak-vi,atyp-en-us-halting-noise,atyp-pt-br-hoarse-reverb
QUICK=espeak-pt-br,espeak-hu,espeak-en-lancaster,atyp-pl-breathy-telephone
AT50=50=linear,ffn,linear_zero,hra_random,houlsby
mkdir -p "$WORK"
# the committed measurements seed every lane: a rerun on the same foundation and recipe trains nothing new
SEED=""
[ -f "$RESULTS/foundation_measurements.jsonl" ] && SEED="--import-results $RESULTS/foundation_measurements.jsonl"
BENCH="$PY -m hra.bench.foundation --train-variant-controllers no $SEED ${BENCH_ARGS:-}"

lane() {  # name voices standard-voices extra-args...
    name=$1 voices=$2 standard=$3; shift 3
    $BENCH --sizes 50 --at "$AT50" --voices "$voices" --standard-voices "$standard" --work-dir "$WORK/$name" \
        --out "$WORK/$name/report50.json" "$@"
    $BENCH --sizes 20,100 --systems linear --voices "$voices" --standard-voices "$standard" --no-real-speech \
        --work-dir "$WORK/$name" --out "$WORK/$name/report20_100.json"
}
lane lane1 "$LANE1" espeak-en-us,flite-kal --no-real-speech > "$WORK/lane1.log" 2>&1 &
pid1=$!
(lane lane2 "$LANE2" flite-slt,festival-kal
 $BENCH --sizes 50 --at 50=lora,full_ft --voices "$QUICK" --standard-voices none --no-real-speech \
     --work-dir "$WORK/lane2" --out "$WORK/lane2/report_lora.json") > "$WORK/lane2.log" 2>&1 &
pid2=$!
wait $pid1
wait $pid2

# The report covers every system at every size that the store holds (the headline grid, plus what longer runs of
# `make bench-foundation` and the variant controllers committed in benchmarks/results/controllers/ measured).
$BENCH --summarize-only --sizes 20,50,100 \
    --systems linear,ffn,linear_zero,ffn_zero,hra_random,hra_u0,hra_decoder,houlsby,lora,full_ft \
    --import-results "$WORK/lane1/results.jsonl" --import-results "$WORK/lane2/results.jsonl" \
    --work-dir "$WORK/merged" --out "$RESULTS/foundation.json"
cp "$WORK/merged/results.jsonl" "$RESULTS/foundation_measurements.jsonl"
