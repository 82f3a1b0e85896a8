#!/usr/bin/env bash
# Score the shipped bundle's members out of fold again, on this machine, and compare them case by case
# with the record they shipped with (docs/training/cv_soup_views3r_views of the bundle). The record
# was scored on a CPU with bfloat16; on one without it (`bf16_supported` false: AVX2 only) the same
# members run in float32, so this measures what the precision changes.
#
#   benchmarks/rescore_shipped.sh EXTRA_DIR [RECORD_NAME]
#
# EXTRA_DIR: the 40 extra cases (python3 ../shared/data/extra/extract.py REPOS_ROOT EXTRA_DIR).
# RECORD_NAME (default cv_soup_views3r_views_fp32): where the scores and comparisons go, beside the
# shipped record. About 20 minutes on a 2-core CPU without bfloat16.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=$1
source benchmarks/cv_helpers.sh   # bs, rec; record_scores
shipped=$rec/cv_soup_views3r_views dest=$rec/${2:-cv_soup_views3r_views_fp32} run=runs/shipped_members
$bs bundle members $run --bundle bundles/brats_mri_2p5d_segmentation
for f in "$shipped"/fold*; do cp "$f"/config.yaml "$f"/summary.json $run/"$(basename "$f")"/; done   # each fold's held-out cases
$bs cv score $run --views axial,coronal,sagittal --root extra="$extra" --out ${run}_views
record_scores ${run}_views "$dest"
$bs cv compare "$shipped" "$dest" --raw --out "$dest"/compare_raw
$bs cv compare "$shipped" "$dest" --out "$dest"/compare_pp
