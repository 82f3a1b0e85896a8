#!/usr/bin/env bash
# The shipped model, end to end: the 60-case pool, 5-fold cross-validation, the fold ensemble.
#
#   benchmarks/cv_pool.sh REPOS_ROOT EXTRA_DIR [RUN_DIR]
#
# REPOS_ROOT: copies of the repositories in ../shared/data/extra/sources.tsv (owner+name/repo, as
# the workspace's fetch tool leaves them); EXTRA_DIR: where the 40 extra cases go (outside the
# repository; never commit them); RUN_DIR: the CV run (default runs/unet25d_pool_long). Every step is
# resumable: extraction keeps files already there, `cv train` resumes a fold from its last epoch
# checkpoint and skips finished folds. 2-core CPU: about 60-70 minutes per fold (16 epochs), then about
# 14 minutes per fold for stage 2 (4 epochs), 12 for stage 3 (3 epochs), 12 for stage 4, 10 for stage 5 and 8 for stage 6 (3 epochs each); stage 7 (one 3D fold) about 70; stage 8 (the wide U-Net) about 60 per fold; stages 9 and 10 about 8 per fold and continuation.
set -euo pipefail
cd "$(dirname "$0")/.."
repos=$1; extra=$2; run=${3:-runs/unet25d_pool_long}
source benchmarks/cv_helpers.sh   # bs, rec; members, record_*, ship, continue_over_bce
python3 ../shared/data/extra/extract.py "$repos" "$extra"
# the committed datalist (data_lists/pool60.json) is what this writes; the folds depend only on the case ids
$bs pool --root brats2018=../shared/data/brats2018 --root extra="$extra" --out "$run/pool60.json"
cmp -s <(python3 -c "import json,sys; print(json.dumps({i['case']: i['fold'] for i in json.load(open(sys.argv[1]))['training']}, sort_keys=True))" "$run/pool60.json") \
       <(python3 -c "import json,sys; print(json.dumps({i['case']: i['fold'] for i in json.load(open(sys.argv[1]))['training']}, sort_keys=True))" data_lists/pool60.json) \
    || { echo "the pool's folds differ from data_lists/pool60.json" >&2; exit 1; }
# stage 1: 5 folds, 16 epochs each (the members of bundles 0.7.0 and 0.8.0)
$bs cv train configs/unet25d_pool.yaml configs/unet25d_pool_long.yaml --out "$run" --root extra="$extra" --quiet
members "$run" runs/shipped_members
# stage 2 (bundle 0.9.0): each fold's member trained 4 more epochs with batch Dice (configs/unet25d_pool_ft.yaml)
ft=${run}_ft
$bs cv train configs/unet25d_pool.yaml configs/unet25d_pool_long.yaml configs/unet25d_pool_ft.yaml --out "$ft" --root extra="$extra" --quiet
$bs cv score "$ft"                                                                    # axial only: docs/training/cv_ft
$bs cv score "$ft" --views axial,coronal,sagittal --root extra="$extra" --out "$ft"_views  # bundle 0.9.0's reading: docs/training/cv_ft_views
members "$ft" runs/ft_members
# stage 3 (bundle 0.10.0): each fold's stage-2 model trained 3 more epochs with Dice + binary cross-entropy (configs/unet25d_pool_bce.yaml)
st=${run}_bce
$bs cv train configs/unet25d_pool.yaml configs/unet25d_pool_long.yaml configs/unet25d_pool_bce.yaml --out "$st" --root extra="$extra" --quiet
$bs cv score "$st" --views axial,coronal,sagittal --root extra="$extra" --out "$st"_views  # stage 3 (bundle 0.10.0): docs/training/cv_bce_views
members "$st" runs/bce_members
# stage 4 (bundle 0.11.0): each fold's stage-3 model trained 3 more epochs twice, with case-balanced slices
# (configs/unet25d_pool_case.yaml) and with half batch, half per-slice Dice (configs/unet25d_pool_slice.yaml);
# then, fold by fold, the mean of the three models' weights (a model soup: one network per fold)
cs=${run}_case; sl=${run}_slice
continue_over_bce configs/unet25d_pool_case.yaml "$cs"
continue_over_bce configs/unet25d_pool_slice.yaml "$sl"
$bs cv score "$cs" --views axial,coronal,sagittal --root extra="$extra" --out "$cs"_views  # case balance alone: docs/training/cv_case_views
$bs cv average runs/bce_members "$cs" --out ${run}_soup --name unet25d_pool_soup  # stage 3 + case balance: docs/training/cv_soup_views
$bs cv score ${run}_soup --views axial,coronal,sagittal --root extra="$extra" --out ${run}_soup_views
sp=${run}_soup3
$bs cv average runs/bce_members "$cs" "$sl" --out "$sp" --name unet25d_pool_soup3
$bs cv score "$sp" --views axial,coronal,sagittal --root extra="$extra" --out "$sp"_views  # the shipped reading: docs/training/cv_soup3_views
cp "$sp"_views/postprocessing.json "$sp"/
$bs cv export "$sp" --views axial,coronal,sagittal   # the fold models -> bundle (model.pt fp16 + model.ts, train.json recipe, datalist.json)
# the committed records and the experiments table
record_scores "$ft" $rec/cv_ft
record_scores "$ft"_views $rec/cv_ft_views
record_scores "$st"_views $rec/cv_bce_views
for f in "$ft"/fold*; do
    d=$rec/cv_ft/$(basename "$f"); v=$rec/cv_ft_views/$(basename "$f"); mkdir -p "$d" "$v"
    cp "$f"/summary.json "$f"/config.yaml "$f"/metrics.csv "$f"/curves.png "$d"/
    cp "$f"/summary.json "$f"/config.yaml "$v"/   # the experiments table reads the recipe beside each record
done
record_trained "$st":cv_bce_views
compare_record cv_ft_views cv_bce_views   # stage 3 against stage 2, case by case
for pair in "$cs"_views:cv_case_views ${run}_soup_views:cv_soup_views "$sp"_views:cv_soup3_views; do
    record_scores "${pair%%:*}" $rec/${pair##*:}
done
record_trained "$cs":cv_case_views "$sl":cv_slice
for pair in ${run}_soup:cv_soup_views "$sp":cv_soup3_views; do   # the soups: their recipe and ingredients
    record_folds "${pair%%:*}" $rec/${pair##*:} summary.json config.yaml
done
for r in cv_case_views cv_soup_views cv_soup3_views; do   # against stage 3, case by case
    compare_record cv_bce_views $r
done
$bs cv quality "$sp"_views --bundle bundles/brats_mri_2p5d_segmentation --out $rec/cv_soup3_views
# stage 5 (experiment, see docs/experiments_notes.md): each fold's 0.11.0 member trained 3 more epochs twice, with
# region-weighted loss (configs/unet25d_pool_et.yaml) and with case balance again (seed 1); soups with the member
members "$sp" runs/soup3_members
et=${run}_et; c1=${run}_case_s1
continue_over_bce configs/unet25d_pool_et.yaml "$et"
$bs cv train configs/unet25d_pool.yaml configs/unet25d_pool_long.yaml configs/unet25d_pool_bce.yaml configs/unet25d_pool_case.yaml \
    --set seed=1 --set 'train#init_weights=runs/soup3_members/fold{fold}/final_model.pt' --out "$c1" --root extra="$extra" --quiet
$bs cv average runs/soup3_members "$et" --out ${run}_soup_et --name unet25d_pool_soup_et
$bs cv average runs/soup3_members "$et" "$c1" --out ${run}_soup_et_case --name unet25d_pool_soup_et_case
record_soup ${run}_soup_et cv_soup_et_views cv_soup3_views             # against bundle 0.11.0
record_soup ${run}_soup_et_case cv_soup_et_case_views cv_soup3_views
record_trained "$et":cv_et "$c1":cv_case_s1
# bundle 0.12.0: the stage-5 soup of all three replaces stage 4's export and calibration above
ship ${run}_soup_et_case cv_soup_et_case_views
# stage 6 (experiment, not shipped; see docs/experiments_notes.md): each fold's 0.12.0 member widened to K = 2 neighbour
# slices and trained 3 more epochs twice (configs/unet25d_pool_k2soup.yaml; with case balance, configs/unet25d_pool_k2case.yaml);
# soups with the member (cv average widens it to K = 2 with zero weights on the new slices)
members ${run}_soup_et_case runs/soup_et_case_members
k2=${run}_k2soup; k2c=${run}_k2case
continue_over_bce configs/unet25d_pool_k2soup.yaml "$k2"
$bs cv train configs/unet25d_pool.yaml configs/unet25d_pool_long.yaml configs/unet25d_pool_bce.yaml configs/unet25d_pool_k2soup.yaml \
    configs/unet25d_pool_k2case.yaml --out "$k2c" --root extra="$extra" --quiet
$bs cv average runs/soup_et_case_members "$k2" --out ${run}_soup_k2 --name unet25d_pool_soup_k2
$bs cv average runs/soup_et_case_members "$k2" "$k2c" --out ${run}_soup_k2_case --name unet25d_pool_soup_k2_case
record_soup ${run}_soup_k2 cv_soup_k2_views cv_soup_et_case_views         # against bundle 0.12.0
record_soup ${run}_soup_k2_case cv_soup_k2_case_views cv_soup_et_case_views
record_trained "$k2":cv_k2soup "$k2c":cv_k2case
# stage 7 (experiment, not shipped; see docs/experiments_notes.md): the 3D reference (SegResNet, configs/segresnet3d_pool.yaml)
# on fold 0, trained for the CPU time stage 1 gave fold 0; judged against the 2.5D models on the same 12 held-out cases
s3=runs/segresnet3d_pool
$bs cv train configs/segresnet3d.yaml configs/segresnet3d_pool.yaml --folds 0 --out "$s3" --root extra="$extra" --quiet
record_partial "$s3" cv_segresnet3d   # against stage 1's fold 0 (the same CPU time) and bundle 0.12.0
# stage 8 (experiment, not shipped; see docs/experiments_notes.md): capacity, stage 1's recipe at twice the width
# (configs/unet25d_pool_wide.yaml, 6.50 M parameters) on folds 0 and 1; judged against stage 1 on the same held-out cases
wide=runs/unet25d_pool_wide
$bs cv train configs/unet25d_pool.yaml configs/unet25d_pool_long.yaml configs/unet25d_pool_wide.yaml --folds 0,1 --out "$wide" --root extra="$extra" --quiet
record_partial "$wide" cv_wide        # against stage 1 (the same recipe at width 16) and bundle 0.12.0
# stage 9 (experiments; (b) is bundle 0.13.0; see docs/experiments_notes.md), over bundle 0.12.0's members:
# (a) source rebalancing: 3 more epochs drawing the adult cases' tumour slices twice as often (configs/unet25d_pool_src.yaml),
#     its soup with the member in three views, against 0.12.0
src=runs/unet25d_pool_src
continue_over_bce configs/unet25d_pool_src.yaml "$src"
$bs cv average runs/soup_et_case_members "$src" --out ${run}_soup_src --name unet25d_pool_soup_src
record_soup ${run}_soup_src cv_soup_src_views cv_soup_et_case_views
record_trained "$src":cv_src
# (b) a view soup (bundle 0.13.0): 3 more epochs on coronal slices and, apart, on sagittal slices (configs/unet25d_pool_cor.yaml,
#     configs/unet25d_pool_sag.yaml), averaged with the member into one network per fold, read in three views, against 0.12.0
cor=runs/unet25d_pool_cor; sag=runs/unet25d_pool_sag
continue_over_bce configs/unet25d_pool_cor.yaml "$cor"
continue_over_bce configs/unet25d_pool_sag.yaml "$sag"
$bs cv average runs/soup_et_case_members "$sag" "$cor" --out ${run}_soup_views --name unet25d_pool_soup_views
record_soup ${run}_soup_views cv_soup_views_views cv_soup_et_case_views
record_trained "$cor":cv_cor "$sag":cv_sag
# the shipped bundle (0.13.0): the stage-9b view soup replaces 0.12.0's export and calibration above
ship ${run}_soup_views cv_soup_views_views
# stage 10 (experiment, not shipped; see docs/experiments_notes.md): a second round of the view soup. Each fold's 0.13.0
# member (the stage-9b soup) trained 3 more epochs on coronal and, apart, on sagittal slices (configs/unet25d_pool_cor2.yaml,
# configs/unet25d_pool_sag2.yaml), averaged with it, read in three views, against 0.13.0
cor2=runs/unet25d_pool_cor2; sag2=runs/unet25d_pool_sag2
continue_over_bce configs/unet25d_pool_cor2.yaml "$cor2"
continue_over_bce configs/unet25d_pool_sag2.yaml "$sag2"
$bs cv average ${run}_soup_views "$sag2" "$cor2" --out ${run}_soup_views2 --name unet25d_pool_soup_views2
record_soup ${run}_soup_views2 cv_soup_views2_views cv_soup_views_views
record_trained "$cor2":cv_cor2 "$sag2":cv_sag2
# (b) the axial third (configs/unet25d_pool_ax2.yaml), all three averaged with the 0.13.0 member (a candidate for the next bundle)
ax2=runs/unet25d_pool_ax2
continue_over_bce configs/unet25d_pool_ax2.yaml "$ax2"
$bs cv average ${run}_soup_views "$ax2" "$sag2" "$cor2" --out ${run}_soup_views3 --name unet25d_pool_soup_views3
record_soup ${run}_soup_views3 cv_soup_views3_views cv_soup_views_views
record_trained "$ax2":cv_ax2
# the shipped bundle (0.14.0): stage 10b's soup replaces 0.13.0's export and calibration above. The weights that ship were made
# by benchmarks/ship_views3.sh, the same recipe started from the 0.13.0 bundle's stored members on a machine without these runs
# (records cv_cor2r, cv_sag2r, cv_ax2r, cv_soup_views3r_views)
ship ${run}_soup_views3 cv_soup_views3_views
