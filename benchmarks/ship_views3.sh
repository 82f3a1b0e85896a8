#!/usr/bin/env bash
# Bundle 0.14.0's weights, as they were made: stage 10b of benchmarks/cv_pool.sh (each fold's 0.13.0
# member averaged with its axial, sagittal and coronal 3-epoch continuations) on a machine that no
# longer held the earlier stages' runs, so started from bundle 0.13.0's members as that bundle stores
# them (git history, float16 weights); then scored in three views, recorded and shipped.
#
#   benchmarks/ship_views3.sh EXTRA_DIR
#
# EXTRA_DIR: the 40 extra cases (python3 ../shared/data/extra/extract.py REPOS_ROOT EXTRA_DIR).
# About 100 minutes on a 2-core CPU: 15 continuations of 5-8 minutes, then 12 minutes of scoring.
# Resumable: `cv train` resumes a fold from its last epoch checkpoint and skips finished folds.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=$1
source benchmarks/cv_helpers.sh   # bs, rec; record_*, ship, continue_over_bce
b013=$(mktemp -d); trap 'rm -rf "$b013"' EXIT
git archive 19b49f0 bundles/brats_mri_2p5d_segmentation | tar -x -C "$b013"   # bundle 0.13.0
$bs bundle members runs/unet25d_pool_long_soup_views --bundle "$b013"/bundles/brats_mri_2p5d_segmentation
for v in cor2 sag2 ax2; do continue_over_bce configs/unet25d_pool_$v.yaml runs/unet25d_pool_$v; done
soup=runs/unet25d_pool_long_soup_views3
$bs cv average runs/unet25d_pool_long_soup_views runs/unet25d_pool_ax2 runs/unet25d_pool_sag2 runs/unet25d_pool_cor2 \
    --out $soup --name unet25d_pool_soup_views3r   # "r": made again
record_soup $soup cv_soup_views3r_views cv_soup_views_views     # scores, against bundle 0.13.0 case by case
record_trained runs/unet25d_pool_cor2:cv_cor2r runs/unet25d_pool_sag2:cv_sag2r runs/unet25d_pool_ax2:cv_ax2r
ship $soup cv_soup_views3r_views                                 # cv export + cv quality: bundle 0.14.0
