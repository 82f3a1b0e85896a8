#!/usr/bin/env bash
# Stage 11 of the CV pipeline (after benchmarks/ship_views3.sh, bundle 0.14.0): a third soup round,
# axial only. Each fold's 0.14.0 member (as the bundle stores it, float16) trains 2 more axial epochs
# (configs/unet25d_pool_ax3.yaml); the continuation averages with the member into one network per
# fold, scored in three views and compared case by case with 0.14.0.
#
#   benchmarks/stage11_ax3.sh EXTRA_DIR
#
# EXTRA_DIR: the 40 extra cases (python3 ../shared/data/extra/extract.py REPOS_ROOT EXTRA_DIR).
# About 75 minutes on a 2-core CPU without bfloat16 (5 continuations of about 11 minutes, then
# 20 minutes of scoring); less on one with it. Resumable: `cv train` resumes a fold from its last
# epoch checkpoint and skips finished folds.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=$1
source benchmarks/cv_helpers.sh   # bs, rec; soup_round
soup_round configs/unet25d_pool_ax3.yaml ax3 cv_soup_views3r_views   # against bundle 0.14.0 case by case
