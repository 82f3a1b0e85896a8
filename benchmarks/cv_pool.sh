#!/usr/bin/env bash
# The shipped model, end to end: the 60-case pool, 5-fold cross-validation, the fold ensemble.
#
#   benchmarks/cv_pool.sh REPOS_ROOT EXTRA_DIR [RUN_DIR] [RUN2_DIR]
#
# Two stages: (1) the K = 1 members, 16 epochs from scratch (bundle 0.7.0); (2) each fold's
# member widened to K = 2 neighbour slices and trained 4 more epochs from it
# (configs/unet25d_pool_k2ft.yaml; the shipped ensemble since bundle 0.8.0).
#
# REPOS_ROOT: copies of the repositories in ../shared/data/extra/sources.tsv (owner+name/repo, as
# the workspace's fetch tool leaves them); EXTRA_DIR: where the 40 extra cases go (outside the
# repository; never commit them); RUN_DIR: the stage-1 CV run (default runs/unet25d_pool_long); RUN2_DIR: stage 2's (default runs/unet25d_pool_k2ft). Every step is
# resumable: extraction keeps files already there, `cv train` resumes a fold from its last epoch
# checkpoint and skips finished folds. 2-core CPU: about 60-70 minutes per fold for stage 1
# (16 epochs), 23 for stage 2 (4 epochs).
set -euo pipefail
cd "$(dirname "$0")/.."
repos=$1; extra=$2; run=${3:-runs/unet25d_pool_long}; run2=${4:-runs/unet25d_pool_k2ft}
bs=${BRAINSEG3D:-.venv/bin/brainseg3d}
python3 ../shared/data/extra/extract.py "$repos" "$extra"
# the committed datalist (data_lists/pool60.json) is what this writes; the folds depend only on the case ids
$bs pool --root brats2018=../shared/data/brats2018 --root extra="$extra" --out "$run/pool60.json"
cmp -s <(python3 -c "import json,sys; print(json.dumps({i['case']: i['fold'] for i in json.load(open(sys.argv[1]))['training']}, sort_keys=True))" "$run/pool60.json") \
       <(python3 -c "import json,sys; print(json.dumps({i['case']: i['fold'] for i in json.load(open(sys.argv[1]))['training']}, sort_keys=True))" data_lists/pool60.json) \
    || { echo "the pool's folds differ from data_lists/pool60.json" >&2; exit 1; }
$bs cv train configs/unet25d_pool.yaml configs/unet25d_pool_long.yaml --out "$run" --root extra="$extra" --quiet   # 5 folds, 16 epochs
$bs cv score "$run"                         # stage 1's out-of-fold Dice / HD95
$bs cv export "$run"                        # stage 1's fold models -> bundle (fp16), as bundle 0.7.0 shipped them
$bs bundle members runs/shipped_members     # ... and back out, one member per fold: stage 2 starts from these
$bs cv train configs/unet25d_pool.yaml configs/unet25d_pool_long.yaml configs/unet25d_pool_k2.yaml configs/unet25d_pool_k2ft.yaml \
    --out "$run2" --root extra="$extra" --quiet                                                      # 5 folds, 4 epochs
$bs cv score "$run2"                        # out-of-fold Dice / HD95, post-processing chosen by CV
$bs cv export "$run2"                       # the fold models -> bundle (model.pt fp16 + model.ts, train.json recipe, datalist.json)
# the committed records (bundles/brats_mri_2p5d_segmentation/docs/training/cv: stage 1, cv_k2ft:
# the shipped ensemble) and the experiments table
for pair in "$run:cv" "$run2:cv_k2ft"; do
    src=${pair%%:*}; rec=bundles/brats_mri_2p5d_segmentation/docs/training/${pair##*:}
    mkdir -p "$rec"
    cp "$src"/cv.json "$src"/cv.csv "$src"/cv_raw.csv "$src"/postprocessing.json "$rec"/
    for f in "$src"/fold*; do
        d=$rec/$(basename "$f"); mkdir -p "$d"
        cp "$f"/summary.json "$f"/config.yaml "$f"/metrics.csv "$f"/curves.png "$d"/
    done
done
$bs cv quality "$run2" --bundle bundles/brats_mri_2p5d_segmentation --out bundles/brats_mri_2p5d_segmentation/docs/training/cv_k2ft
$bs cv table bundles/brats_mri_2p5d_segmentation/docs/training/cv_8epochs bundles/brats_mri_2p5d_segmentation/docs/training/cv \
    bundles/brats_mri_2p5d_segmentation/docs/training/cv_k2 bundles/brats_mri_2p5d_segmentation/docs/training/cv_k2ft \
    --out docs/experiments.md --notes docs/experiments_notes.md
