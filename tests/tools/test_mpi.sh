#!/usr/bin/env bash
# tests/tools/test_mpi.sh BUILD_DIR SOURCE_DIR — multi-process training under Open MPI on this machine's
# CPUs (docs/distributed.md), on a tiny NAT and Fashion-MNIST:
#   1. mpirun -np 2 (one thread per rank) logs the losses and ends with the weights, optimizer state and
#      EMA of one process with train.replicas = 2, bit for bit (50 steps, drop-path on); -np 3 with two
#      micro-batches per step those of train.replicas = 3; two processes launched without MPI by RANK,
#      WORLD_SIZE, MASTER_ADDR, MASTER_PORT (the TCP engine) those of train.replicas = 2;
#   2. -np 2 and -np 3 on a batch of 12 (drop-path off: its draws depend on the split) agree within 1e-5
#      per step;
#   3. a rank that stops answering (SIGSTOP) brings the job down within train.dist_timeout, naming it;
#      a rank that is killed (SIGKILL) brings it down too, naming it; --resume from the last checkpoint
#      then continues exactly (-np 2: the same bits as the uninterrupted run; -np 3: within 1e-5);
#   4. two "machines": ranks in two network namespaces joined by a veth pair (root only), the bits of 1.
# Exit 77 (skipped) without mpirun, without a build with MPI, or without Debian's dataset-fashion-mnist.
set -uo pipefail
build=$1
src=$2
data=/usr/share/datasets/fashion-mnist
if ! command -v mpirun >/dev/null; then
  echo "SKIP  mpirun not found (install openmpi-bin libopenmpi-dev: scripts/install-deps.sh)"
  exit 77
fi
if ! "$build/nat-train" --help | grep -q "This build: MPI yes"; then
  echo "SKIP  $build/nat-train was built without MPI (install libopenmpi-dev and run cmake again)"
  exit 77
fi
if [ ! -f "$data/train-images-idx3-ubyte.gz" ]; then
  echo "SKIP  Fashion-MNIST not found at $data (install dataset-fashion-mnist)"
  exit 77
fi
tmp=$(mktemp -d /tmp/nat_mpi.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "ok    $*"; }
bad() { echo "FAIL  $*"; fails=$((fails + 1)); }

# Loopback TCP only (no shared-memory or InfiniBand transport: what two machines would use); running as
# root (CI containers) needs Open MPI's explicit consent.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Under AddressSanitizer (scripts/test.sh's second pass) the ranks run without leak checking: Open MPI
# leaves allocations of plugins it unloads in MPI_Finalize, which LeakSanitizer cannot attribute (frames
# of "<unknown module>") and so cannot suppress; nat's own leaks are checked by the runs here without
# MPI (train.replicas, the RANK/WORLD_SIZE launch) and by test_dist.
mpi_asan="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" # the last setting of an option wins
mpi=(mpirun --oversubscribe --mca btl self,tcp --mca btl_tcp_if_include lo --mca oob_tcp_if_include lo
     -x OMP_NUM_THREADS=1 -x ASAN_OPTIONS="$mpi_asan")
tiny=(--set model.embed_dim=16 --set model.depths=1,1 --set model.heads=1,2 --set model.mlp_ratio=2
      --set data.train_limit=1200 --set data.test_limit=240 --set train.batch_size=12 --set train.epochs=1
      --set train.eval_every=0 --set train.eval_batch_size=32 --set train.checkpoint_every=10 --set train.threads=1
      --set log.print_every=1000)
train() { "$build/nat-train" "$src/configs/nat_mini.cfg" "${tiny[@]}" "$@"; }

# losses OUT_A OUT_B: "step,loss,lr,grad_norm" columns of two runs' train_log.csv identical.
same_losses() { diff <(cut -d, -f1,3-5 "$1/train_log.csv") <(cut -d, -f1,3-5 "$2/train_log.csv") >"$tmp/diff"; }
# close OUT_A OUT_B TOL: same steps, |loss_a - loss_b| <= TOL at every step; prints the largest gap.
close() {
  paste -d, <(cut -d, -f1,3 "$1/train_log.csv") <(cut -d, -f1,3 "$2/train_log.csv") | awk -F, -v tol="$3" '
    NR == 1 { next }
    { n++; d = $2 - $4; if (d < 0) d = -d; if (d > m) m = d; if ($1 != $3 || d > tol) bad++ }
    END { printf "%d steps, largest difference %.2g", n, m; exit (bad > 0 || n == 0) }'
}
# weights CKPT_A CKPT_B: every tensor of two safetensors files has the same bytes (the configs differ).
same_tensors() {
  python3 - "$1" "$2" <<'EOF'
import json, struct, sys
def load(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    return {k: d[v['data_offsets'][0]:v['data_offsets'][1]] for k, v in h.items() if k != '__metadata__'}
a, b = load(sys.argv[1]), load(sys.argv[2])
diff = [k for k in a if a[k] != b.get(k)] + [k for k in b if k not in a]
print(f"{len(a)} tensors" + (f", {len(diff)} differ: {' '.join(diff[:4])}" if diff else ""))
sys.exit(1 if diff else 0)
EOF
}

# against_replicas N STEPS [--set ...]: mpirun -np N against one process with train.replicas = N, same
# settings: the logged losses, then every tensor of the final checkpoint, bit for bit. Runs in $tmp/repN
# and $tmp/npN; the mpirun output stays in $tmp/out.
against_replicas() {
  local n=$1 steps=$2
  shift 2
  train --set train.max_steps="$steps" --set train.replicas="$n" "$@" --out "$tmp/rep$n" >"$tmp/out" 2>&1 ||
    { bad "replicas=$n run failed"; tail -5 "$tmp/out"; }
  "${mpi[@]}" -np "$n" "$build/nat-train" "$src/configs/nat_mini.cfg" "${tiny[@]}" --set train.max_steps="$steps" \
    --set train.replicas=1 "$@" --out "$tmp/np$n" >"$tmp/out" 2>&1 || { bad "-np $n run failed"; tail -5 "$tmp/out"; }
  if same_losses "$tmp/rep$n" "$tmp/np$n"; then
    ok "-np $n${*:+ ($*)}: the $steps losses, learning rates and gradient norms equal train.replicas=$n's bit for bit"
  else
    bad "-np $n and train.replicas=$n log different losses:"; head -6 "$tmp/diff"
  fi
  local ck
  ck=$(printf 'ckpt-%08d.safetensors' "$steps")
  msg=$(same_tensors "$tmp/rep$n/$ck" "$tmp/np$n/$ck") &&
    ok "-np $n: the final weights, optimizer state and EMA equal train.replicas=$n's bit for bit ($msg)" ||
    bad "-np $n: the final checkpoint differs from train.replicas=$n's: $msg"
}

# ---- 1. -np N against train.replicas = N ----
against_replicas 2 50
grep -q "distributed: 2 processes (mpi)" "$tmp/out" && ok "-np 2 runs as 2 processes (mpi)" || bad "-np 2: no 'distributed: 2 processes' line"
[ "$(grep -c '^summary: checkpoint' "$tmp/out")" = 1 ] && ok "rank 0 alone prints the summary" || bad "the summary is printed $(grep -c '^summary: checkpoint' "$tmp/out") times"
diff <(cut -d, -f1-7 "$tmp/rep2/eval_log.csv") <(cut -d, -f1-7 "$tmp/np2/eval_log.csv") >/dev/null &&
  ok "-np 2: the sharded evaluation gives the same top-1, top-5 and loss" || bad "-np 2: evaluation differs"
# The same job launched without MPI, as torchrun would (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): the
# TCP engine, every message through rank 0, the same bits.
port=$((20000 + RANDOM % 20000))
for r in 1 0; do
  RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port OMP_NUM_THREADS=1 \
    train --set train.max_steps=50 --set train.replicas=1 --out "$tmp/tcp$r" >"$tmp/tcp$r.log" 2>&1 &
done
wait
grep -q "distributed: 2 processes (tcp)" "$tmp/tcp0.log" && same_losses "$tmp/rep2" "$tmp/tcp0" &&
  ok "RANK/WORLD_SIZE launch (tcp engine): the 50 losses equal train.replicas=2's bit for bit" ||
  { bad "RANK/WORLD_SIZE launch differs or failed:"; tail -3 "$tmp/tcp0.log" "$tmp/tcp1.log"; head -4 "$tmp/diff"; }
[ ! -e "$tmp/tcp1" ] && ok "rank 1 wrote nothing" || bad "rank 1 created its --out directory"
# Three ranks show the summation order (two terms commute); two micro-batches per step show that rank 0's
# earlier micro-batch is added first, as train.replicas' master holds it.
against_replicas 3 20 --set train.accum_steps=2

# ---- 2. -np 2 against -np 3, drop-path off ----
# Batches of 96 (epochs of 100 steps from 9,600 images), so that a step takes milliseconds even on a fast
# CPU: section 3 freezes or kills a rank between the checkpoints of steps 10 and 60, which needs that
# time (with tiny's 2 ms steps the whole epoch could end before the signal arrived).
nodp=(--set model.drop_path=0 --set train.replicas=1 --set train.max_steps=60
      --set train.batch_size=96 --set data.train_limit=9600)
"${mpi[@]}" -np 2 "$build/nat-train" "$src/configs/nat_mini.cfg" "${tiny[@]}" "${nodp[@]}" --out "$tmp/d2" >"$tmp/out" 2>&1 || bad "-np 2 (no drop-path) failed"
"${mpi[@]}" -np 3 "$build/nat-train" "$src/configs/nat_mini.cfg" "${tiny[@]}" "${nodp[@]}" --out "$tmp/d3" >"$tmp/out" 2>&1 || { bad "-np 3 failed"; tail -5 "$tmp/out"; }
msg=$(close "$tmp/d2" "$tmp/d3" 1e-5) && ok "-np 2 and -np 3 agree within 1e-5 per step ($msg)" || bad "-np 2 and -np 3 differ: $msg"

# ---- 3. a rank that stops answering, a rank that dies, and --resume with another N ----
# rank_pid MPIRUN_PID RANK: the pid of that rank (a child of mpirun carrying OMPI_COMM_WORLD_RANK).
# From /proc, not pgrep (procps may be missing from a CI image): mpirun's children from its tasks'
# "children" files, else by a scan of every process's parent (field 4 of stat).
rank_pid() {
  local kids p
  kids=$(cat /proc/"$1"/task/*/children 2>/dev/null) ||
    kids=$(for d in /proc/[0-9]*; do [ "$(cut -d' ' -f4 "$d/stat" 2>/dev/null)" = "$1" ] && echo "${d#/proc/}"; done)
  for p in $kids; do
    tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && { echo "$p"; return; }
  done
}
# start_long OUT: a -np 2 run of the same job that would go on for the whole epoch; waits for its
# checkpoint of step 10, then freezes rank 1 (SIGSTOP), so the run stands still at a known checkpoint.
start_long() {
  "${mpi[@]}" -np 2 "$build/nat-train" "$src/configs/nat_mini.cfg" "${tiny[@]}" "${nodp[@]}" --set train.max_steps=0 \
    --set train.dist_timeout=5 --out "$1" >"$1.log" 2>&1 &
  mpirun_pid=$!
  victim=
  for _ in $(seq 300); do victim=$(rank_pid "$mpirun_pid" 1); [ -n "$victim" ] && break; sleep 0.1; done
  for _ in $(seq 3000); do [ -f "$1/ckpt-00000010.safetensors" ] && break; sleep 0.01; done
  [ -n "$victim" ] && kill -STOP "$victim"
}
# wait_exit SECONDS: rc = the exit status of mpirun, or 999 if it is still running after SECONDS (then
# killed). Not in a $(...) subshell: only this shell can wait for its child.
wait_exit() {
  for _ in $(seq $(($1 * 10))); do kill -0 "$mpirun_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$mpirun_pid" 2>/dev/null; then kill -KILL "$mpirun_pid"; wait "$mpirun_pid"; rc=999; return; fi
  wait "$mpirun_pid"; rc=$?
}

start_long "$tmp/hang"
t0=$(date +%s)
wait_exit 60
dt=$(($(date +%s) - t0))
[ "$rc" != 0 ] && [ "$rc" != 999 ] && ok "a stopped rank: the job exits (status $rc) after ${dt} s (train.dist_timeout = 5)" ||
  bad "a stopped rank: mpirun status $rc after ${dt} s"
grep -q "rank(s) 1 did not answer within 5 s" "$tmp/hang.log" && ok "the message names rank 1" ||
  { bad "no message naming rank 1:"; tail -5 "$tmp/hang.log"; }

start_long "$tmp/kill"
[ -n "$victim" ] && kill -KILL "$victim"
t0=$(date +%s)
wait_exit 60
dt=$(($(date +%s) - t0))
[ "$rc" != 0 ] && [ "$rc" != 999 ] && ok "a killed rank: the job exits (status $rc) after ${dt} s" ||
  bad "a killed rank: mpirun status $rc after ${dt} s"
grep -qi "rank 1 .*\(killed\|signal 9\)\|process rank 1 .*exited\|rank(s) 1 did not answer" "$tmp/kill.log" &&
  ok "the message names rank 1: $(grep -i -m1 'rank 1 \|rank(s) 1' "$tmp/kill.log" | cut -c1-120)" ||
  { bad "no message naming rank 1:"; tail -8 "$tmp/kill.log"; }
last=$(readlink "$tmp/kill/last.safetensors")
echo "      the killed run's last checkpoint: $last"
case $last in ckpt-000000[1-5]?.safetensors) ;;
  *) bad "the run was frozen too late ($last): the resume checks below need a checkpoint before step 60" ;; esac
cp -r "$tmp/kill" "$tmp/kill3"
"${mpi[@]}" -np 2 "$build/nat-train" --resume "$tmp/kill" --set train.max_steps=60 >"$tmp/out" 2>&1 ||
  { bad "--resume -np 2 failed"; tail -5 "$tmp/out"; }
if same_losses "$tmp/d2" "$tmp/kill"; then
  ok "--resume -np 2 after the kill: the 60 losses equal the uninterrupted -np 2 run's bit for bit"
else
  bad "--resume -np 2 differs from the uninterrupted run:"; head -6 "$tmp/diff"
fi
msg=$(same_tensors "$tmp/d2/ckpt-00000060.safetensors" "$tmp/kill/ckpt-00000060.safetensors") &&
  ok "--resume -np 2: the same final weights ($msg)" || bad "--resume -np 2: final weights differ: $msg"
"${mpi[@]}" -np 3 "$build/nat-train" --resume "$tmp/kill3" --set train.max_steps=60 >"$tmp/out" 2>&1 ||
  { bad "--resume -np 3 failed"; tail -5 "$tmp/out"; }
msg=$(close "$tmp/d2" "$tmp/kill3" 1e-5) && ok "--resume -np 3 of the -np 2 run: within 1e-5 of the uninterrupted run ($msg)" ||
  bad "--resume -np 3 differs: $msg"

# ---- 4. two "machines": two network namespaces joined by a veth pair ----
# mpirun runs in namespace A and starts rank 1 in namespace B through a remote shell that enters B
# (instead of ssh); every byte between the ranks crosses the veth pair as it would cross a network.
# Needs root with CAP_NET_ADMIN (ip netns); skipped otherwise, saying so.
two_hosts() {
  local a=nat$$a b=nat$$b net=10.199.$((RANDOM % 250))
  if [ "$(id -u)" != 0 ] || ! command -v ip >/dev/null || ! ip netns add "$a" 2>/dev/null; then
    echo "SKIP  two machines as network namespaces: needs root with CAP_NET_ADMIN and iproute2's ip netns"
    return
  fi
  trap 'ip netns del "'"$a"'" 2>/dev/null; ip netns del "'"$b"'" 2>/dev/null; rm -rf "$tmp"' EXIT
  ip netns add "$b" && ip link add "vn$$a" type veth peer name "vn$$b" &&
    ip link set "vn$$a" netns "$a" && ip link set "vn$$b" netns "$b" &&
    ip -n "$a" addr add "$net.1/24" dev "vn$$a" && ip -n "$b" addr add "$net.2/24" dev "vn$$b" &&
    ip -n "$a" link set "vn$$a" up && ip -n "$b" link set "vn$$b" up &&
    ip -n "$a" link set lo up && ip -n "$b" link set lo up ||
    { bad "two machines: could not set up the namespaces"; return; }
  # Open MPI's remote shell (plm_rsh_agent): HOST COMMAND... runs COMMAND in HOST's namespace.
  printf '#!/bin/sh\nhost=$1; shift\ncase $host in %s) ns=%s ;; %s) ns=%s ;; *) exit 1 ;; esac\nexec ip netns exec "$ns" sh -c "$*"\n' \
    "$net.1" "$a" "$net.2" "$b" >"$tmp/rsh"
  chmod +x "$tmp/rsh"
  printf '%s slots=1\n%s slots=1\n' "$net.1" "$net.2" >"$tmp/hosts"
  ip netns exec "$a" mpirun -np 2 --hostfile "$tmp/hosts" --mca plm_rsh_agent "$tmp/rsh" --mca btl self,tcp \
    --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24" -x OMP_NUM_THREADS=1 -x ASAN_OPTIONS="$mpi_asan" \
    "$build/nat-train" "$src/configs/nat_mini.cfg" "${tiny[@]}" --set train.max_steps=50 --set train.replicas=1 \
    --out "$tmp/hosts2" >"$tmp/out" 2>&1 || { bad "two machines: mpirun failed"; tail -5 "$tmp/out"; return; }
  if same_losses "$tmp/rep2" "$tmp/hosts2"; then
    ok "two machines ($net.1, $net.2: namespaces joined by a veth pair): the 50 losses equal train.replicas=2's bit for bit"
  else
    bad "two machines: the losses differ from train.replicas=2's:"; head -4 "$tmp/diff"
  fi
}
two_hosts

echo "mpi: $fails failure(s)"
[ "$fails" -eq 0 ]
