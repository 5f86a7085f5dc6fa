#!/usr/bin/env bash
# Benchmark rows on a lent GPU machine (the `device` tool), from the repository root: by default the
# full profile's three diffusion rows on cardiomegaly (METHODS, TASK and PROFILE choose others, e.g.
# METHODS=gvr,vagan TASK=opacity). Each call runs the benchmark
# for at most LIMIT seconds and stops it with Ctrl-C; the next call, while the machine is still
# warm, continues it (stage checkpoints and row journals, `--resume`). The rows come back in $OUT.
#
# Here, once (downloads the wheels the device image lacks and copies the LPIPS weights into .gpu/,
# which git ignores; nothing of it is committed):
#     bash benchmarks/device_benchmark.sh --prepare
# Then, with the device tool: run(command="bash benchmarks/device_benchmark.sh",
# carry=[".gpu"], timeout_s=600), again at once while it ends with "not finished".
# Smoke test on a CPU (the micro profile, this checkout's venv):
#     PY=.venv/bin/python PROFILE=micro DEVICE=cpu bash benchmarks/device_benchmark.sh
set -euo pipefail
G=.gpu
PY=${PY:-python3}
if [ "${1:-}" = --prepare ]; then
  mkdir -p "$G/whl" "$G/cache/lpips"
  grep -qsx '/.gpu/' .git/info/exclude || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
  # the device's Python is 3.12 (KINDS.md); these are pure-Python wheels of medcf's dependencies
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d "$G/whl" diffusers==0.42.1 lpips==0.1.4 pytorch-fid==0.3.0 \
    captum==0.9.0 importlib_metadata==10.2.0
  cp "${MEDCF_CACHE:-$HOME/.cache/medcf}/lpips/alex.safetensors" "$G/cache/lpips/"  # the benchmark's LPIPS (vgg: 59 MB, too big to carry)
  ls -l "$G/whl" "$G/cache/lpips"
  exit 0
fi
[ -d "$G/whl" ] || { echo "$G/whl: run 'bash $0 --prepare' first and carry $G" >&2; exit 2; }
PROFILE=${PROFILE:-full}
DEVICE=${DEVICE:-cuda}
LIMIT=${LIMIT:-540}
METHODS=${METHODS:-diffusion,diffusion-masked,diffusion-dime}
TASK=${TASK:-cardiomegaly}
RUN=${RUN:-runs/device-$PROFILE}   # runs/ is ignored: kept between calls on a warm machine
"$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/medcf-site "$G"/whl/*.whl
export PYTHONPATH=/tmp/medcf-site:$PWD/src MEDCF_CACHE=$PWD/$G/cache PYTHONUNBUFFERED=1
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name(0))"
mkdir -p runs
set +e
timeout --signal=INT --kill-after=30 "$LIMIT" "$PY" -m medcf benchmark --profile "$PROFILE" --device "$DEVICE" \
  --out "$RUN" --task "$TASK" --methods "$METHODS" --jobs 1 --no-progress \
  --resume 2>&1 | tee -a "$RUN.log"
rc=${PIPESTATUS[0]}
set -e
if [ -n "${OUT:-}" ]; then
  cp "$RUN.log" "$OUT/"
  for f in results.csv results.md benchmark.json; do [ -f "$RUN/$f" ] && cp "$RUN/$f" "$OUT/"; done
fi
if [ "$rc" = 0 ]; then echo "finished: $RUN/results.csv"; else echo "not finished (exit $rc): call again to continue"; fi
