#!/usr/bin/env bash
# scripts/plots.sh — measures nat on this machine and draws docs/plots/*.png and *.svg with gnuplot.
#
#   bash scripts/plots.sh [--build DIR] [--runs "DIR ..."] [--quick] [--no-torch] [--resume] [--plots-only]
#
# Measurements (CSV files under docs/plots/data/, kept so the plots can be redrawn with --plots-only):
#   sweep.csv      nat-profile --sweep: the 8 NAT/DiNAT variants, training and inference, 224², batch 8,
#                  plus NAT-Mini..Base with Swin's window attention in the same network
#   impl.csv       NAT-Mini and DiNAT-Mini training at 224², batch 8, by NA implementation (fused, unfused,
#                  gather) and with window attention
#   fmnist.csv     every finished Fashion-MNIST run directory (a nat-train run: config.cfg + eval_log.csv,
#                  evaluated after its last planned epoch on the whole 10,000-image test set) under --runs:
#                  its final test top-1 and nat-profile of its network at 28², batch 64 (train and infer)
#   torch_nat.csv  bench/torch_nat.py: NAT-Mini in PyTorch (glibc malloc and jemalloc) against nat, same run
#   machine.txt    CPU, threads, date, load averages
#   pieces/        one CSV per nat-profile / torch_nat.py invocation, merged into the files above
# Plots (docs/plots/):
#   throughput_vs_accuracy, compute_vs_accuracy, memory_vs_accuracy   two panels each: our Fashion-MNIST
#       runs (left) and the papers' ImageNet-1k top-1 of the published variants (right); bubble area ~ params
#   step_time_by_impl   NAT-Mini / DiNAT-Mini training step time and peak memory by NA implementation,
#       window attention and PyTorch (CPU; GPU runs: scripts/gpu-check.sh on a machine with a GPU)
#
# --out DIR: write plots to DIR and data to DIR/data instead of docs/plots (for trying the script).
# --runs: run directories or parents of run directories (default: runs/). --quick: 2 timed steps, 1 traced
# (for trying the script; the committed data uses the defaults). --no-torch: skip the PyTorch runs (about
# 6 minutes). --resume keeps the pieces already measured and runs the rest (after an interruption: on a
# shared machine, stop when someone else's job starts and resume later). The whole default run takes about
# 25 minutes on the 2-core development VM; nothing else should run meanwhile (the figures are medians, but
# a loaded machine still moves them: every row records the load average).
set -euo pipefail
cd "$(dirname "$0")/.."

build=build runs="runs" quick=0 torch=1 measure=1 resume=0 out=docs/plots data=docs/plots/data
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --no-torch) torch=0; shift ;;
    --plots-only) measure=0; shift ;;
    --resume) resume=1; shift ;;
    --out) out=$2; data=$2/data; shift 2 ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "plots.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
command -v gnuplot >/dev/null || { echo "plots.sh: gnuplot missing: bash scripts/install-deps.sh (gnuplot-nox)" >&2; exit 1; }
mkdir -p "$data"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
prof="$build/nat-profile"

if [ "$measure" = 1 ]; then
  [ -x "$prof" ] || { echo "plots.sh: $prof missing: cmake --build $build" >&2; exit 1; }
  steps=(--steps 5 --trace-steps 3)
  [ "$quick" = 1 ] && steps=(--steps 2 --trace-steps 1)
  pieces="$data/pieces"
  [ -d "$pieces" ] && [ -f "$data/machine.txt" ] || resume=0
  if [ "$resume" = 0 ]; then
    rm -rf "$pieces"
    {
      echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores visible, OMP_NUM_THREADS=$OMP_NUM_THREADS"
      echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo); $(uname -sr)"
      echo "start: $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    } > "$data/machine.txt"
  else
    echo "resumed: $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)" >> "$data/machine.txt"
  fi
  mkdir -p "$pieces"
  # piece NAME CMD...: CMD writes its CSV rows to $pieces/NAME.csv (its last argument); kept by --resume
  piece() {
    local name=$1 f="$pieces/$1.csv"; shift
    if [ -s "$f" ]; then echo "  kept $f"; return 0; fi
    rm -f "$f.part"
    if "$@" "$f.part"; then mv "$f.part" "$f"; else echo "plots.sh: $name failed (see above); going on" >&2; fi
  }
  echo "== sweep: every variant, training and inference, 224², batch 8"
  for v in nat_mini nat_tiny nat_small nat_base dinat_mini dinat_tiny dinat_small dinat_base; do
    for m in train infer; do
      piece "sweep-$v-$m" "$prof" --model "$v" --mode "$m" "${steps[@]}" --csv
    done
  done
  echo "== the same network with window attention"
  for v in nat_mini nat_tiny nat_small nat_base; do
    for m in train infer; do
      piece "window-$v-$m" "$prof" --model "$v" --attention window --mode "$m" "${steps[@]}" --csv
    done
  done
  echo "== NA implementations: NAT-Mini and DiNAT-Mini training"
  for v in nat_mini dinat_mini; do
    for i in fused unfused gather; do
      piece "impl-$v-$i" "$prof" --model "$v" --mode train --na-impl "$i" "${steps[@]}" --csv
    done
  done
  for v in nat_mini dinat_mini; do # activation checkpointing: the memory-saving mode
    piece "impl-$v-fused-recompute" "$prof" --model "$v" --mode train --recompute "${steps[@]}" --csv
  done
  piece "impl-nat_mini-window" "$prof" --model nat_mini --mode train --attention window "${steps[@]}" --csv
  echo "== Fashion-MNIST runs under: $runs"
  dirs=()
  for r in $runs; do
    for d in "$r" "$r"/*/; do
      d=${d%/}
      [ -f "$d/config.cfg" ] && [ -f "$d/eval_log.csv" ] && dirs+=("$d")
    done
  done
  for d in "${dirs[@]}"; do
    fmt=$(awk -F' *= *' '/^\[/ {s=$0} s=="[data]" && $1=="format" {print $2}' "$d/config.cfg")
    case "$fmt" in fashion-mnist|mnist) ;; *) echo "  skip $d (data.format $fmt)"; continue ;; esac
    last=$(tail -n 1 "$d/eval_log.csv")
    images=$(echo "$last" | cut -d, -f4)
    if ! [ "${images:-0}" -ge 10000 ] 2>/dev/null; then echo "  skip $d (last evaluation on $images images)"; continue; fi
    label=$(basename "$d")
    top1=$(echo "$last" | cut -d, -f5) epochs=$(echo "$last" | cut -d, -f2)
    planned=$(awk -F' *= *' '/^\[/ {s=$0} s=="[train]" && $1=="epochs" {print $2}' "$d/config.cfg")
    if ! awk -v e="$epochs" -v p="${planned:-0}" 'BEGIN {exit !(e + 1e-6 >= p)}'; then
      echo "  skip $d (evaluated after $epochs of $planned epochs: not finished)"; continue
    fi
    echo "  $d: test top-1 $top1 after $epochs epochs"
    piece "fmnist-$label" "$prof" --config "$d/config.cfg" --label "$label" --in-chans 1 --classes 10 --res 28 \
      --batch 64 --mode train,infer "${steps[@]}" --csv
    # the run's accuracy next to its profile rows
    awk -F, -v top1="$top1" -v ep="$epochs" -v dir="$d" 'NR == 1 {print $0 ",top1,epochs,run_dir"; next}
      {print $0 "," top1 "," ep "," dir}' "$pieces/fmnist-$label.csv" > "$pieces/acc-$label.csv"
  done
  if [ "$torch" = 1 ]; then
    echo "== PyTorch side by side (NAT-Mini, 224², batch 8)"
    tn=(/usr/bin/python3 bench/torch_nat.py --nat-profile "$prof" --threads "$OMP_NUM_THREADS")
    piece torch-train-jemalloc "${tn[@]}" --mode train --allocators jemalloc --csv
    piece torch-train-glibc "${tn[@]}" --mode train --allocators glibc --csv
    piece torch-infer "${tn[@]}" --mode infer --allocators glibc,jemalloc --csv
  fi
  # one CSV per kind: the header once, then every piece's rows
  merge() { local out=$1; shift; rm -f "$out"; for f in "$@"; do [ -s "$f" ] || continue
    if [ -s "$out" ]; then tail -n +2 "$f" >> "$out"; else cp "$f" "$out"; fi; done; }
  merge "$data/sweep.csv" "$pieces"/sweep-*.csv "$pieces"/window-*.csv
  merge "$data/impl.csv" "$pieces"/impl-*.csv
  merge "$data/fmnist.csv" "$pieces"/acc-*.csv
  merge "$data/torch_nat.csv" "$pieces"/torch-*.csv
  echo "end: $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)" >> "$data/machine.txt"
fi

# ---- gnuplot inputs: whitespace-separated tables ----
tmpd=$(mktemp -d)
trap 'rm -rf "$tmpd"' EXIT
machine=$(head -n 1 "$data/machine.txt" | sed 's/^cpu: //; s/, .*//')
when=$(grep -m1 '^start:' "$data/machine.txt" | sed 's/^start: //; s/, load.*//')

# column index by name in a CSV header
col() { head -n 1 "$1" | tr ',' '\n' | grep -nx "$2" | cut -d: -f1; }

# ImageNet panel: published top-1 (docs/design.md §3; DiNAT paper) with nat's measurements at 224², batch 8
cat > "$tmpd/paper.txt" <<'EOF'
nat_mini 81.8
nat_tiny 83.2
nat_small 83.7
nat_base 84.3
dinat_mini 81.8
dinat_tiny 82.7
dinat_small 83.8
dinat_base 84.4
EOF
S="$data/sweep.csv"
if [ -f "$S" ]; then
  awk -F, -v m="$(col "$S" model)" -v a="$(col "$S" attention)" -v i="$(col "$S" na_impl)" -v mo="$(col "$S" mode)" \
      -v p="$(col "$S" params)" -v g="$(col "$S" gmacs_per_image)" -v ips="$(col "$S" images_per_s)" \
      -v pk="$(col "$S" alloc_peak_mib)" '
    FNR == NR {acc[$1] = $2; next}
    FNR == 1 {next}
    $a == "na" && $i == "fused" {
      key = $m; params[key] = $p / 1e6; gm[key] = $g
      if ($mo == "train") {tr[key] = $ips; peak[key] = $pk} else inf[key] = $ips
    }
    END {
      for (k in acc) if (k in tr)
        printf "%s %s %.3f %.4f %.4f %.4f %.1f %.1f\n", k, (k ~ /^dinat/ ? 1 : 0), params[k], gm[k], tr[k], inf[k], peak[k], acc[k]
    }' FS=' ' "$tmpd/paper.txt" FS=, "$S" | sort > "$tmpd/imagenet.dat"
fi
F="$data/fmnist.csv"
: > "$tmpd/fmnist.dat"
if [ -f "$F" ]; then
  # A run profiled on another CPU than the title's is labelled name@EPYC or name@Xeon: throughput
  # figures of two machines share the axis.
  awk -F, -v m="$(col "$F" model)" -v mo="$(col "$F" mode)" -v p="$(col "$F" params)" -v g="$(col "$F" gmacs_per_image)" \
      -v ips="$(col "$F" images_per_s)" -v pk="$(col "$F" alloc_peak_mib)" -v t="$(col "$F" top1)" -v e="$(col "$F" epochs)" \
      -v c="$(col "$F" cpu)" -v here="$machine" '
    FNR == 1 {next}
    {key = $m
     if ($c != here) key = key "@" ($c ~ /Intel/ ? "Xeon" : $c ~ /AMD/ ? "EPYC" : "other-CPU")
     params[key] = $p / 1e6; gm[key] = $g; acc[key] = $t; ep[key] = $e
     if ($mo == "train") {tr[key] = $ips; peak[key] = $pk} else inf[key] = $ips}
    END {for (k in tr) printf "%s %.4f %.5f %.2f %.2f %.1f %.2f %.0f\n", k, params[k], gm[k], tr[k], inf[k], peak[k], acc[k], ep[k]}' \
    "$F" | sort -k7,7n > "$tmpd/fmnist.dat"
fi

# Step time and memory by implementation: one row per implementation, NAT-Mini and DiNAT-Mini side by side
# ("-": not measured). PyTorch rows come from torch_nat.csv (NAT-Mini only).
I="$data/impl.csv" T="$data/torch_nat.csv"
{
  if [ -f "$I" ]; then
    awk -F, -v m="$(col "$I" model)" -v a="$(col "$I" attention)" -v i="$(col "$I" na_impl)" \
        -v ms="$(col "$I" step_ms_median)" -v pk="$(col "$I" alloc_peak_mib)" '
      FNR == 1 {next}
      {name = ($a == "window" ? "window attention (Swin)" : "NA " $i); model = $m
       if (sub(/\+recompute$/, "", model)) name = name " + recompute"
       printf "%s|%s|%.1f|%.1f\n", name, model, $ms, $pk}' "$I"
  fi
  if [ -f "$T" ]; then
    awk -F, -v mo="$(col "$T" mode)" -v b="$(col "$T" baseline)" -v ips="$(col "$T" baseline_images_per_s)" \
        -v bt="$(col "$T" batch)" -v rss="$(col "$T" baseline_rss_gib)" -v m="$(col "$T" model)" '
      FNR == 1 {next}
      $mo == "train" {name = $b; sub(/^PyTorch \(/, "PyTorch legacy NA (", name)
        printf "%s|%s|%.1f|%.1f\n", name, $m, 1000 * $bt / $ips, 1024 * $rss}' "$T"
  fi
} | awk -F'|' '
  !($1 in seen) {seen[$1] = ++n; order[n] = $1}
  {ms[$1, $2] = $3; mem[$1, $2] = $4}
  END {for (k = 1; k <= n; k++) {r = order[k]
    printf "\"%s\" %s %s %s %s\n", r, ((r, "nat_mini") in ms ? ms[r, "nat_mini"] : "-"), ((r, "dinat_mini") in ms ? ms[r, "dinat_mini"] : "-"),
      ((r, "nat_mini") in mem ? mem[r, "nat_mini"] : "-"), ((r, "dinat_mini") in mem ? mem[r, "dinat_mini"] : "-")}}' > "$tmpd/impl.dat"

# ---- plots ----
have_fm=$([ -s "$tmpd/fmnist.dat" ] && echo 1 || echo 0)
bubble() { # gnuplot point size from params (M): area ~ params
  echo "(0.6 + 1.6 * sqrt(\$$1 / $2))"
}
for kind in throughput compute memory; do
  case $kind in
    throughput) xi=5 xf=4 xlab="training images/s (nat, this CPU)" logx="set logscale x" ;;
    compute) xi=4 xf=3 xlab="GMACs per image" logx="set logscale x" ;;
    memory) xi=7 xf=6 xlab="peak memory in training (MiB, nat's allocator)" logx="set logscale x" ;;
  esac
  for fmt in png svg; do
    if [ $fmt = png ]; then term="set terminal pngcairo noenhanced size 1500,620 font 'DejaVu Sans,11'"; else term="set terminal svg noenhanced size 1500,620 dynamic font 'DejaVu Sans,11'"; fi
    gnuplot <<EOF
$term
set output "$out/${kind}_vs_accuracy.$fmt"
set multiplot layout 1,2 title "${kind^} vs accuracy — nat on ${machine}, ${OMP_NUM_THREADS} threads, ${when} (bubble area ~ parameters)" font ',13'
set grid
$logx
set key bottom right box opaque
set offsets graph 0.08, graph 0.15, graph 0.08, graph 0.08
set title "Fashion-MNIST: our nat-train runs (test top-1; 28², batch 64; name@CPU: profiled on that CPU)"
set xlabel "$xlab"
set ylabel "Fashion-MNIST test top-1 (%)"
if ($have_fm) {
  plot "$tmpd/fmnist.dat" using $xf:7:$(bubble 2 0.45) with points pt 7 ps variable lc rgb '#2a9d8f' title "our runs", \
       "" using (int(\$0) % 2 == 0 ? \$$xf : NaN):7:(sprintf("%s (%.2fM, %d ep)", stringcolumn(1), \$2, \$8)) with labels left offset 1.5,0.9 font ',9' notitle, \
       "" using (int(\$0) % 2 == 1 ? \$$xf : NaN):7:(sprintf("%s (%.2fM, %d ep)", stringcolumn(1), \$2, \$8)) with labels right offset -1.5,-0.9 font ',9' notitle
} else {
  unset logscale x
  set xrange [0:1]; set yrange [0:1]; unset xtics; unset ytics
  set label 1 "no complete Fashion-MNIST run found (scripts/plots.sh --runs DIR)" at 0.5,0.5 center
  plot NaN notitle
  unset label 1
  set xtics; set ytics; set autoscale
  $logx
}
set title "ImageNet-1k top-1 as published (NAT, DiNAT papers); nat measured at 224², batch 8"
set ylabel "ImageNet-1k top-1 (%, published)"
set yrange [81:85]
plot "$tmpd/imagenet.dat" using (\$2 == 0 ? \$$xi : NaN):8:$(bubble 3 20) with points pt 7 ps variable lc rgb '#264653' title "NAT", \
     "" using (\$2 == 1 ? \$$xi : NaN):8:$(bubble 3 20) with points pt 6 ps variable lw 2 lc rgb '#e76f51' title "DiNAT", \
     "" using (\$2 == 0 ? \$$xi : NaN):8:(sprintf("%s %.0fM", stringcolumn(1), \$3)) with labels right offset -1.2,1.3 font ',10' notitle, \
     "" using (\$2 == 1 ? \$$xi : NaN):8:(sprintf("%s %.0fM", stringcolumn(1), \$3)) with labels left offset 1.2,-1.3 font ',10' notitle
unset multiplot
EOF
  done
done

if [ -s "$tmpd/impl.dat" ]; then
  for fmt in png svg; do
    if [ $fmt = png ]; then term="set terminal pngcairo noenhanced size 1500,680 font 'DejaVu Sans,11'"; else term="set terminal svg noenhanced size 1500,680 dynamic font 'DejaVu Sans,11'"; fi
    gnuplot <<EOF
$term
set output "$out/step_time_by_impl.$fmt"
set multiplot layout 1,2 title "Training step at 224², batch 8, by attention implementation — CPU: ${machine}, ${OMP_NUM_THREADS} threads, ${when}\nGPU: not measured here (no GPU on this machine)" font ',13'
set datafile missing "-"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set grid y
set logscale y
set offsets 0, 0, 0, 0
set xtics rotate by -20 left font ',10' nomirror
set bmargin 7
set key top left
set title "time per training step (ms, median; log scale)"
set ylabel "ms per step"
set yrange [500:100000]
plot "$tmpd/impl.dat" using 2:xtic(1) lc rgb '#264653' title "NAT-Mini", \
     "" using 3 lc rgb '#e76f51' title "DiNAT-Mini", \
     "" using (\$0 - 1.0/6):2:(sprintf("%.0f", \$2)) with labels left rotate by 90 offset 0,0.5 font ',9' notitle, \
     "" using (\$0 + 1.0/6):3:(sprintf("%.0f", \$3)) with labels left rotate by 90 offset 0,0.5 font ',9' notitle
set title "peak memory in training (MiB; nat: allocator peak, PyTorch: process RSS; log scale)"
set ylabel "MiB"
set yrange [500:30000]
plot "$tmpd/impl.dat" using 4:xtic(1) lc rgb '#264653' title "NAT-Mini", \
     "" using 5 lc rgb '#e76f51' title "DiNAT-Mini", \
     "" using (\$0 - 1.0/6):4:(sprintf("%.0f", \$4)) with labels left rotate by 90 offset 0,0.5 font ',9' notitle, \
     "" using (\$0 + 1.0/6):5:(sprintf("%.0f", \$5)) with labels left rotate by 90 offset 0,0.5 font ',9' notitle
unset multiplot
EOF
  done
fi
echo "plots.sh: wrote $(ls "$out"/*.png | tr '\n' ' ')"
