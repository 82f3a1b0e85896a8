#!/usr/bin/env bash
# Stage 12 of the CV pipeline (after benchmarks/stage11_ax3.sh): stage 11 with elastic deformation.
# Each fold's 0.14.0 member (as the bundle stores it, float16) trains 2 more axial epochs with
# Rand2DElasticd in place of RandAffined (configs/unet25d_pool_el.yaml); the continuation averages
# with the member into one network per fold, scored in three views and compared case by case with
# 0.14.0 and with stage 11 (the same round without elastic deformation).
#
#   benchmarks/stage12_el.sh EXTRA_DIR
#
# EXTRA_DIR: the 40 extra cases (python3 ../shared/data/extra/extract.py REPOS_ROOT EXTRA_DIR).
# About 80 minutes on a 2-core CPU without bfloat16 (5 continuations of about 12 minutes, then
# 20 minutes of scoring); less on one with it. Resumable: `cv train` resumes a fold from its last
# epoch checkpoint and skips finished folds.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=$1
source benchmarks/cv_helpers.sh   # bs, rec; soup_round, compare_record
soup_round configs/unet25d_pool_el.yaml el cv_soup_views3r_views   # against bundle 0.14.0 case by case
compare_record cv_soup_ax3_views cv_soup_el_views _ax3             # against stage 11, the same round without elastic deformation
