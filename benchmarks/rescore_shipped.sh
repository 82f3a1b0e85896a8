#!/usr/bin/env bash
# Score the shipped bundle's members out of fold again, on this machine, and compare them case by case
# with the record they shipped with (the bundle's metadata.json names it: cv_record). The record
# was scored on a CPU with bfloat16; on one without it (`bf16_supported` false: AVX2 only) the same
# members run in float32, so this measures what the precision changes.
#
#   benchmarks/rescore_shipped.sh EXTRA_DIR [RECORD_NAME]
#
# EXTRA_DIR: the 40 extra cases (python3 ../shared/data/extra/extract.py REPOS_ROOT EXTRA_DIR).
# RECORD_NAME (default: the shipped record's name + _rescored): where the scores and comparisons go, beside the
# shipped record. About 20 minutes on a 2-core CPU without bfloat16. Bundle 0.14.0's record (bfloat16) was
# cv_soup_views3r_views; this script, run under 0.14.0 (RECORD_NAME cv_soup_views3r_views_fp32), made the float32
# record that bundle 0.14.1 ships with (the same weights). Run under 0.14.1 with the post-processing search that
# gained the core hole filling (RECORD_NAME cv_soup_views3r_views_fh), it made bundle 0.15.0's record (the same
# weights again; each fold's held-out predictions were already there, so 11 minutes of search only).
set -euo pipefail
cd "$(dirname "$0")/.."
extra=$1
source benchmarks/cv_helpers.sh   # bs, rec; shipped_record, score_views
shipped=$(shipped_record) run=runs/shipped_members
$bs bundle members $run --bundle bundles/brats_mri_2p5d_segmentation
for f in "$rec/$shipped"/fold*; do cp "$f"/config.yaml "$f"/summary.json $run/"$(basename "$f")"/; done   # each fold's held-out cases
score_views $run "${2:-${shipped}_rescored}" "$shipped"
record_folds $run "$rec/${2:-${shipped}_rescored}" config.yaml summary.json   # the folds the record was scored on
