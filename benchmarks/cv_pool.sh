#!/usr/bin/env bash
# The shipped model, end to end: the 60-case pool, 5-fold cross-validation, the fold ensemble.
#
#   benchmarks/cv_pool.sh REPOS_ROOT EXTRA_DIR [RUN_DIR]
#
# REPOS_ROOT: copies of the repositories in ../shared/data/extra/sources.tsv (owner+name/repo, as
# the workspace's fetch tool leaves them); EXTRA_DIR: where the 40 extra cases go (outside the
# repository; never commit them); RUN_DIR: the CV run (default runs/unet25d_pool_long). Every step is
# resumable: extraction keeps files already there, `cv train` resumes a fold from its last epoch
# checkpoint and skips finished folds. 2-core CPU: about 60-70 minutes per fold (16 epochs).
set -euo pipefail
cd "$(dirname "$0")/.."
repos=$1; extra=$2; run=${3:-runs/unet25d_pool_long}
bs=${BRAINSEG3D:-.venv/bin/brainseg3d}
python3 ../shared/data/extra/extract.py "$repos" "$extra"
# the committed datalist (data_lists/pool60.json) is what this writes; the folds depend only on the case ids
$bs pool --root brats2018=../shared/data/brats2018 --root extra="$extra" --out "$run/pool60.json"
cmp -s <(python3 -c "import json,sys; print(json.dumps({i['case']: i['fold'] for i in json.load(open(sys.argv[1]))['training']}, sort_keys=True))" "$run/pool60.json") \
       <(python3 -c "import json,sys; print(json.dumps({i['case']: i['fold'] for i in json.load(open(sys.argv[1]))['training']}, sort_keys=True))" data_lists/pool60.json) \
    || { echo "the pool's folds differ from data_lists/pool60.json" >&2; exit 1; }
$bs cv train configs/unet25d_pool.yaml configs/unet25d_pool_long.yaml --out "$run" --root extra="$extra" --quiet   # 5 folds, 16 epochs
$bs cv score "$run"                         # out-of-fold Dice / HD95, post-processing chosen by CV
$bs cv export "$run"                        # the fold models -> bundle (model.pt fp16 + model.ts, train.json recipe, datalist.json)
# the committed record (bundles/brats_mri_2p5d_segmentation/docs/training/cv) and the experiments table
mkdir -p bundles/brats_mri_2p5d_segmentation/docs/training/cv
cp "$run"/cv.json "$run"/cv.csv "$run"/cv_raw.csv "$run"/postprocessing.json bundles/brats_mri_2p5d_segmentation/docs/training/cv/
for f in "$run"/fold*; do
    d=bundles/brats_mri_2p5d_segmentation/docs/training/cv/$(basename "$f"); mkdir -p "$d"
    cp "$f"/summary.json "$f"/config.yaml "$f"/metrics.csv "$f"/curves.png "$d"/
done
$bs cv quality "$run" --bundle bundles/brats_mri_2p5d_segmentation --out bundles/brats_mri_2p5d_segmentation/docs/training/cv
$bs cv table bundles/brats_mri_2p5d_segmentation/docs/training/cv_8epochs bundles/brats_mri_2p5d_segmentation/docs/training/cv --out docs/experiments.md --notes docs/experiments_notes.md
