#!/usr/bin/env bash
# Run scnet-dask from a login node (or a small CPU job): it starts a Dask scheduler here and
# submits worker jobs through dask-jobqueue (settings in ~/.config/dask/jobqueue.yaml).
# 4 jobs x 2 GPUs = 8 GPU workers for training (8 DDP ranks) and for tiled inference.
# Every step can be re-run after a job hits its wall-time limit: --resume continues it.
set -euo pipefail
RUN=/scratch/$USER/veev
CLUSTER=(--cluster slurm --jobs 4 --gpus-per-job 2 --dashboard-address :8787)

scnet-dask convert tomo.rec "$RUN/tomo.ome.zarr" --cluster slurm --jobs 2 --resume
scnet-dask prior "$RUN/tomo.ome.zarr" "$RUN/prior.ome.zarr" --method gaussian --sigma 1.5 \
    --cluster slurm --jobs 2
RESUME=(); [ -f "$RUN/run/last.pt" ] && RESUME=(--resume)
scnet-dask train "$RUN/tomo.ome.zarr" --prior "$RUN/prior.ome.zarr" --out "$RUN/run" \
    --device cuda "${CLUSTER[@]}" "${RESUME[@]}"
scnet-dask denoise "$RUN/tomo.ome.zarr" "$RUN/run/best.pt" "$RUN/denoised.ome.zarr" \
    --device cuda --batch-size 2 "${CLUSTER[@]}" --resume
