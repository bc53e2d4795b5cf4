#!/usr/bin/env bash
# One short check on a CUDA machine (<= 10 minutes on an H100-class GPU), issue 16:
#   1. set-up: the project's venv with a CUDA torch (installed only if missing);
#   2. CUDA train steps, torch, fp32 / bf16 / fp16 (+ channels_last), mvd-ms and mvd-pt, batch 64
#      at 288x144 (ms/step; the MS README: 940 ms on an RTX Titan; goal <= 300 ms here);
#   3. a distributed smoke: torchrun --nproc-per-node 1 (nccl) through `mvd train`;
#   4. CUDA vs CPU parity (same weights, same batch: forward / losses / gradients under the
#      fp32 tolerances of mvd_core.parity.tolerances) and the mixed-precision parity on CUDA.
# Every result lands in $OUT (JSON + logs); a summary table is printed at the end; the exit
# status is 1 when any step failed (each failure is said where it happened).
#
#   [VENV=.venv] benchmarks/gpu_check.sh [--dry-run] [--out DIR]
#
# --dry-run: no install, no GPU: every step runs on the CPU at toy size (tiny recipe, batch 16,
# 3 steps, gloo instead of nccl, fp16 skipped) -- checks that the script and its commands work.
set -euo pipefail

DRY=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    *) echo "usage: $0 [--dry-run] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
VENV="${VENV:-.venv}"  # the project venv (as the Makefile: VENV=... overrides)
PY="$VENV/bin/python"
MVD="$VENV/bin/mvd"
T0=$(date +%s)
say() { echo "[gpu_check $(( $(date +%s) - T0 ))s] $*"; }
FAILS=0
fail() { FAILS=$((FAILS + 1)); say "$*"; }

# ------------------------------------------------------------------ 1. set-up
if [ "$DRY" = 0 ]; then
  if [ ! -x "$PY" ]; then
    say "creating $VENV"
    python3 -m venv "$VENV"
  fi
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    say "installing a CUDA torch and the project"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128  # as README
  fi
  "$PY" -c "import mvd_core" 2>/dev/null || "$VENV/bin/pip" install -q -e '.[torch,dev]'
  nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
  DEV=cuda; RECIPES="mvd-ms mvd-pt"; BATCH=64; STEPS=8; WARM=3; AMPS="bf16 fp16"
  SIZE=(--set data.height=288 --set data.width=144); CLASSES=395
else
  say "dry run: CPU, toy sizes"
  DEV=cpu; RECIPES="tiny"; BATCH=16; STEPS=3; WARM=1; AMPS="bf16"
  SIZE=(); CLASSES=16
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi
"$PY" - > "$OUT/env.json" <<'EOF'
import json, platform, torch
info = {"torch": torch.__version__, "cuda": torch.version.cuda, "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
print(json.dumps(info, indent=2))
EOF
cat "$OUT/env.json"

# ------------------------------------------------------------------ 2. train steps
for recipe in $RECIPES; do
  for amp in $AMPS; do
    say "train steps: $recipe, fp32 vs $amp, batch $BATCH, $DEV"
    timeout 240 "$PY" benchmarks/bench_amp.py --config "$recipe" --batch "$BATCH" \
      --steps "$STEPS" --warmup "$WARM" --device "$DEV" --classes "$CLASSES" --amp "$amp" \
      --contenders fp32 amp amp+cl "${SIZE[@]}" --json "$OUT/steps-$recipe-$amp.json" \
      > "$OUT/steps-$recipe-$amp.log" 2>&1 || fail "FAILED (see $OUT/steps-$recipe-$amp.log)"
    tail -n 5 "$OUT/steps-$recipe-$amp.log"
  done
done

# ------------------------------------------------------------------ 3. distributed smoke
say "distributed smoke: torchrun --nproc-per-node 1 mvd train (nccl on CUDA, gloo on CPU)"
"$MVD" synth --layout sysu --out "$OUT/data/SYSU-MM01" --ids 20 -k 3 > "$OUT/synth.log" 2>&1 || true
if [ -d "$OUT/data/SYSU-MM01" ]; then
  DEVFLAG=$([ "$DEV" = cuda ] && echo cuda || echo cpu)
  timeout 240 "$PY" -m torch.distributed.run --nnodes 1 --nproc-per-node 1 --master-addr 127.0.0.1 \
    --master-port 29581 "$MVD" train --config tiny --device "$DEVFLAG" \
    --data-path "$OUT/data/SYSU-MM01" --out "$OUT/runs" --ckpt smoke --epochs 1 \
    --set schedule.steps_per_epoch=3 --set schedule.warmup=1 --set eval.trials=1 \
    > "$OUT/dist-smoke.log" 2>&1 && say "distributed smoke: ok" || fail "distributed smoke FAILED (see $OUT/dist-smoke.log)"
  tail -n 3 "$OUT/dist-smoke.log"
else
  fail "distributed smoke skipped: mvd synth failed (see $OUT/synth.log)"
fi

# ------------------------------------------------------------------ 4. parity
say "parity: torch $DEV vs CPU (fp32 tolerances), and mixed precision on $DEV"
timeout 240 "$PY" - "$DEV" "$OUT/parity.json" <<'EOF' 2>&1 | tee "$OUT/parity.log" || fail "parity FAILED"
import json, sys
import numpy as np
from mvd_core.parity.amp import run_amp_parity
from mvd_core.config import load_config, replace
from mvd_core.io import atomic_write_text
from mvd_core.parity.compare import compare
from mvd_core.parity.inputs import make_batch
from mvd_core.registry import create_backend

dev, out = sys.argv[1], sys.argv[2]
cfg = replace(load_config("tiny"), model={"dropout": 0.0, "residual_gain": 0.1})
cpu = create_backend(replace(cfg, run={"device": "cpu"}), 16)
acc = create_backend(replace(cfg, run={"device": dev}), 16)
acc.load_state(cpu.state(), strict=True)
b = make_batch(np.random.default_rng(0), cfg, 16, 16)
rows = []
fa, fc = acc.forward(b, train=False), cpu.forward(b, train=False)
rows += [compare("forward", k, fa[k], fc[k], "forward") for k in ("feat", "v_obs.logits")]
la, lc = acc.loss_terms(b), cpu.loss_terms(b)
rows += [compare("loss", k, la[k], lc[k], "loss") for k in lc]
ga, gc = acc.gradients(b), cpu.gradients(b)
rows += [compare("grad", k, ga[k], gc[k], "grad") for k in gc]
amps = ["bf16", "fp16"] if dev.startswith("cuda") else ["bf16"]
for amp in amps:
    rep = run_amp_parity(replace(cfg, run={"device": dev}), amp=amp, steps=3)
    rows += [r for r in rep.rows]
bad = [r for r in rows if not r.passed]
for r in rows:
    if r.section != "grad" or not r.passed:
        print(f"{r.section:12s} {r.name:28s} rel {r.rel:.2e} {'ok' if r.passed else 'FAIL'}")
print(f"parity: {len(rows)} rows, {len(bad)} failing; grad rows: worst rel "
      f"{max(r.rel for r in rows if r.section == 'grad'):.2e}")
atomic_write_text(out, json.dumps({"device": dev, "rows": [r.to_dict() for r in rows]}, indent=1) + "\n")
EOF

# ------------------------------------------------------------------ summary
say "summary (ms/step, speed-up vs fp32, max relative loss gap):"
"$PY" - "$OUT" <<'EOF'
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("steps-*.json")):
    d = json.loads(f.read_text())
    for r in d["rows"]:
        print(f"{d['recipe']:7s} {f.stem.split('-')[-1]:5s} {r['contender']:8s} "
              f"{1000 * r['step_s']:8.1f} ms  {r['speedup_vs_fp32']:5.2f}x  gap {r['max_rel_loss_gap']:.1e}")
EOF
say "done: results in $OUT"
if [ "$FAILS" != 0 ]; then
  say "$FAILS step(s) failed"
  exit 1
fi
