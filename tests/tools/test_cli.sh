#!/usr/bin/env bash
# tests/tools/test_cli.sh BUILD_DIR SOURCE_DIR — the command-line tools and the examples, as a user runs them.
#
# Exit codes (docs/training.md): 0 success, 1 a failure at run time (missing or unreadable file, training
# or evaluation error), 2 bad usage (unknown option, missing value) or a config that does not parse.
# Then a tiny train -> eval -> export -> classify -> resume round trip on Fashion-MNIST, where a resumed
# run must log the same losses as an uninterrupted one, and the examples against expected outputs.
# Needs Debian's dataset-fashion-mnist; without it the test reports skipped (77) naming the path.
set -uo pipefail
build=$1
src=$2
data=/usr/share/datasets/fashion-mnist
tmp=$(mktemp -d /tmp/nat_cli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "ok    $*"; }
bad() { echo "FAIL  $*"; fails=$((fails + 1)); }

# expect CODE DESCRIPTION COMMAND...: runs the command, checks its exit code; output in $tmp/out.
expect() {
  local want=$1 what=$2
  shift 2
  "$@" >"$tmp/out" 2>&1
  local got=$?
  if [ "$got" -eq "$want" ]; then ok "$what (exit $got)"; else bad "$what: exit $got, expected $want"; sed 's/^/      /' "$tmp/out" | tail -5; fi
}
# has PATTERN DESCRIPTION: the last command's output contains PATTERN.
has() {
  if grep -q -- "$1" "$tmp/out"; then ok "$2"; else bad "$2: output lacks '$1'"; sed 's/^/      /' "$tmp/out" | tail -5; fi
}

# ---- exit codes ----
for t in nat-train nat-eval nat-classify nat-bench nat-profile; do
  expect 0 "$t --help" "$build/$t" --help
  has "usage" "$t --help prints the usage"
  expect 2 "$t with an unknown option" "$build/$t" --no-such-option
done
expect 2 "nat-train without a config" "$build/nat-train"
expect 1 "nat-train with a missing config file" "$build/nat-train" "$tmp/missing.cfg"
has "missing.cfg" "the missing config is named"
printf '[model]\nembed_dim = 16\nkernel_sise = 3\n' >"$tmp/typo.cfg"
expect 2 "nat-train with an unknown key" "$build/nat-train" "$tmp/typo.cfg"
has "typo.cfg:3" "the bad key is named with file and line"
printf '[train]\nepochs = many\n' >"$tmp/value.cfg"
expect 2 "nat-train with a bad value" "$build/nat-train" "$tmp/value.cfg"
has "value.cfg:2" "the bad value is named with file and line"
expect 2 "nat-train --set without a value" "$build/nat-train" "$src/configs/nat_mini.cfg" --set
expect 2 "nat-eval without --checkpoint" "$build/nat-eval"
expect 1 "nat-eval with a missing checkpoint" "$build/nat-eval" --checkpoint "$tmp/none.safetensors"
has "none.safetensors" "the missing checkpoint is named"
expect 2 "nat-bench with an unknown benchmark" "$build/nat-bench" no-such-bench
expect 2 "nat-profile with an unknown model" "$build/nat-profile" --model no_such_model --mode infer

# ---- nat-classify on the checked-in tiny Fashion-MNIST NAT ----
ck="$src/tests/data/tiny_fmnist.safetensors"
boot="$src/tests/data/fmnist_test0_ankle_boot.png"
expect 2 "nat-classify without --checkpoint" "$build/nat-classify" "$boot"
expect 2 "nat-classify without images" "$build/nat-classify" --checkpoint "$ck"
expect 2 "nat-classify --top 0" "$build/nat-classify" --checkpoint "$ck" --top 0 "$boot"
expect 0 "nat-classify an ankle boot" "$build/nat-classify" --checkpoint "$ck" --top 3 "$boot"
has "1\. 0\.[0-9]*  Ankle boot (9)" "nat-classify: the ankle boot is class 9, with its Fashion-MNIST name"
has "images/s" "nat-classify prints images/s"
expect 1 "nat-classify with one unreadable image among good ones" "$build/nat-classify" --checkpoint "$ck" \
  "$boot" "$tmp/none.png" "$src/tests/data/fmnist_test2_trouser.png"
has "none.png: cannot open" "the unreadable image is named"
has "Trouser (1)" "the images after it still run"
expect 1 "nat-classify with a missing checkpoint" "$build/nat-classify" --checkpoint "$tmp/none.safetensors" "$boot"
has "none.safetensors" "the missing checkpoint is named"
printf 'a\nb\n' >"$tmp/two.txt"
expect 2 "nat-classify --labels with 2 names for 10 classes" "$build/nat-classify" --checkpoint "$ck" --labels "$tmp/two.txt" "$boot"
expect 1 "nat-classify --json with a failure" "$build/nat-classify" --checkpoint "$ck" --json --top 2 "$boot" "$tmp/none.png"
if python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); i=d["images"]; assert i[0]["top"][0]["class"]==9 and len(i[0]["top"])==2 and "error" in i[1] and d["failed"]==1' "$tmp/out" 2>/dev/null; then
  ok "nat-classify --json parses: class 9 first, the failed image has an error"
else
  bad "nat-classify --json: output does not parse or is wrong"; head -20 "$tmp/out" | sed 's/^/      /'
fi

# ---- the benchmark tools run (tiny problems) ----
expect 0 "nat-bench na2d, fused forward and backward, checked against unfused" "$build/nat-bench" na2d \
  --size 14 --batch 1 --pass fwdbwd --reps 2
has "RESULT impl=fused pass=fwdbwd" "nat-bench prints its RESULT line"
err=$(sed -n 's/.*max |diff| \/ max |value| = \([0-9.e+-]*\).*/\1/p' "$tmp/out")
awk -v e="$err" 'BEGIN { exit !(e != "" && e < 1e-5) }' && ok "nat-bench's fused and unfused kernels agree ($err)" \
  || bad "nat-bench's check: '$err', expected < 1e-5"
expect 0 "nat-bench na2d, legacy gather" "$build/nat-bench" na2d --size 14 --batch 1 --pass fwdbwd --impl gather --reps 1
expect 0 "nat-profile, NAT-Mini inference at 32x32" "$build/nat-profile" --model nat_mini --mode infer --batch 1 \
  --res 32 --steps 1 --warmup 0 --trace-steps 0 --in-chans 1 --classes 10 --csv "$tmp/profile.csv"
has "throughput: .* images/s" "nat-profile prints images/s"
[ "$(wc -l < "$tmp/profile.csv")" -eq 2 ] && ok "nat-profile wrote a CSV header and one row" \
  || bad "nat-profile's CSV has $(wc -l < "$tmp/profile.csv") lines, expected 2"

# ---- examples ----
expect 0 "embed_na runs" "$build/examples/embed_na"
# The NA layer's output on the example's fixed input and seed (f32, any thread count; recorded when the
# example was written, docs/design.md §2 semantics): a wrong window, scale or projection changes it.
mean=$(sed -n 's/.*mean |y| = \([0-9.e+-]*\).*/\1/p' "$tmp/out")
if awk -v m="$mean" 'BEGIN { d = m - 4.566026e-04; exit !(d < 5e-10 && d > -5e-10) }'; then
  ok "embed_na's output matches the recorded value ($mean)"
else
  bad "embed_na's mean |y| is '$mean', expected 4.566026e-04"
fi
# A checked-in 17k-parameter NAT (tests/data/tiny_fmnist.safetensors, exported by nat-eval --export
# from a 400-step Fashion-MNIST run) on two Fashion-MNIST test images.
expect 0 "classify an ankle boot" "$build/examples/classify" "$src/tests/data/tiny_fmnist.safetensors" \
  "$src/tests/data/fmnist_test0_ankle_boot.png"
first=$(grep -m1 'class ' "$tmp/out" | awk '{print $2}')
[ "$first" = 9 ] && ok "classify: ankle boot is class 9" || bad "classify: top class '$first' for the ankle boot, expected 9"
expect 0 "classify a trouser" "$build/examples/classify" "$src/tests/data/tiny_fmnist.safetensors" \
  "$src/tests/data/fmnist_test2_trouser.png"
first=$(grep -m1 'class ' "$tmp/out" | awk '{print $2}')
[ "$first" = 1 ] && ok "classify: trouser is class 1" || bad "classify: top class '$first' for the trouser, expected 1"
expect 1 "classify a missing image" "$build/examples/classify" "$src/tests/data/tiny_fmnist.safetensors" "$tmp/none.png"

if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
  echo "SKIP  the train/eval round trip: Fashion-MNIST not found at $data (install dataset-fashion-mnist)"
  [ "$fails" -eq 0 ] && exit 77 || exit 1
fi

# ---- bf16 on a CPU without AVX512-BF16 says that it is emulated (the cap makes any CPU such a one) ----
ONEDNN_MAX_CPU_ISA=AVX2 expect 0 "nat-train --dry-run, bf16, ISA capped at AVX2" "$build/nat-train" \
  "$src/configs/nat_mini.cfg" --dry-run --set train.precision=bf16
has "no AVX512-BF16 in use (ISA avx2)" "bf16 without AVX512-BF16: the plan says bf16 is emulated here"
ONEDNN_MAX_CPU_ISA=AVX2 expect 0 "nat-train --dry-run, f32, ISA capped at AVX2" "$build/nat-train" \
  "$src/configs/nat_mini.cfg" --dry-run
if grep -q "AVX512-BF16" "$tmp/out"; then bad "f32: no bf16 note expected"; else ok "f32: no bf16 note"; fi
# An Intel core with AVX512-BF16 and no AMX (or AMX capped away) emulates bf16 too, and says why; an AMD
# core runs vdpbf16ps and oneDNN's bf16 kernels, and says nothing.
if grep -q -w avx512_bf16 /proc/cpuinfo 2>/dev/null; then
  ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 expect 0 "nat-train --dry-run, bf16, ISA capped at AVX512_CORE_BF16" \
    "$build/nat-train" "$src/configs/nat_mini.cfg" --dry-run --set train.precision=bf16
  if grep -q -m1 AuthenticAMD /proc/cpuinfo; then
    if grep -q "vdpbf16ps is no faster" "$tmp/out"; then bad "AMD with AVX512-BF16: no emulation note expected"
    else ok "AMD with AVX512-BF16: bf16 runs natively, no note"; fi
  else
    has "vdpbf16ps is no faster than its f32 FMAs" "Intel at AVX512_CORE_BF16: the plan says bf16 is emulated and why"
  fi
fi

# ---- train -> eval -> export -> classify -> resume ----
tiny=(--set model.embed_dim=16 --set model.depths=1,1 --set model.heads=1,2 --set model.mlp_ratio=2
      --set data.train_limit=1024 --set data.test_limit=256 --set train.batch_size=64 --set train.epochs=1
      --set train.replicas=1 --set train.eval_every=0 --set train.checkpoint_every=8 --set train.threads=1)
expect 0 "nat-train: a tiny uninterrupted run" "$build/nat-train" "$src/configs/nat_mini.cfg" "${tiny[@]}" --out "$tmp/a"
has "summary: test top-1" "nat-train prints its summary"
expect 0 "nat-eval on the run directory" "$build/nat-eval" --checkpoint "$tmp/a" --set data.test_limit=256
has "top-1 .*top-5" "nat-eval prints top-1 and top-5"
expect 0 "nat-eval --ema" "$build/nat-eval" --checkpoint "$tmp/a" --ema --set data.test_limit=256
expect 0 "nat-eval --export" "$build/nat-eval" --checkpoint "$tmp/a" --ema --export "$tmp/weights.safetensors"
expect 0 "classify with the exported weights" "$build/examples/classify" "$tmp/weights.safetensors" \
  "$src/tests/data/fmnist_test0_ankle_boot.png"
expect 0 "nat-train: the same run stopped at step 8" "$build/nat-train" "$src/configs/nat_mini.cfg" "${tiny[@]}" \
  --set train.max_steps=8 --out "$tmp/b"
expect 0 "nat-train --resume to the end" "$build/nat-train" --resume "$tmp/b" --set train.max_steps=0
if diff <(cut -d, -f1,3 "$tmp/a/train_log.csv") <(cut -d, -f1,3 "$tmp/b/train_log.csv") >"$tmp/diff"; then
  ok "the resumed run's losses equal the uninterrupted run's, step for step ($(($(wc -l <"$tmp/a/train_log.csv") - 1)) steps)"
else
  bad "the resumed run's losses differ:"; head -5 "$tmp/diff"
fi

echo "tools: $fails failure(s)"
[ "$fails" -eq 0 ]
