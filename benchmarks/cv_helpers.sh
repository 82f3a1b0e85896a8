# Shell helpers of the CV pipeline scripts (benchmarks/cv_pool.sh, benchmarks/ship_views3.sh), sourced by them.
# They read the caller's extra (the extra cases' folder) and these two, set here once:
bs=${BRAINSEG3D:-.venv/bin/brainseg3d}                  # the brainseg3d command
rec=bundles/brats_mri_2p5d_segmentation/docs/training   # the bundle's committed CV records
members() {   # RUN OUT: each fold's final weights as OUT/fold<i>/final_model.pt (what the next stage starts from)
    for f in "$1"/fold*; do mkdir -p "$2/$(basename "$f")"; cp "$f"/final_model.pt "$2/$(basename "$f")/"; done
}
record_folds() {   # RUN RECORD FILE...: those files of each fold of RUN into RECORD/fold<i>/
    local src=$1 dest=$2 f n; shift 2
    for f in "$src"/fold*; do mkdir -p "$dest/$(basename "$f")"; for n in "$@"; do cp "$f/$n" "$dest/$(basename "$f")/"; done; done
}
record_scores() {   # SCORED RECORD: the scores and post-processing `cv score` wrote in SCORED, into RECORD
    mkdir -p "$2"; cp "$1"/cv.json "$1"/cv.csv "$1"/cv_raw.csv "$1"/postprocessing.json "$2"/
}
shipped_record() {   # the shipped weights' CV record (the bundle's metadata.json names it as cv_record), relative to $rec
    python3 -c "import json, pathlib; print(pathlib.Path(json.load(open('$rec/../../configs/metadata.json'))['cv_record']).name)"
}
score_views() {   # RUN RECORD BASELINE: score RUN in three views, keep the scores in RECORD, compare with BASELINE case by case
    local dest=$rec/$2 base=$rec/$3
    $bs cv score "$1" --views axial,coronal,sagittal --root extra="$extra" --out "$1"_views
    record_scores "$1"_views "$dest"
    compare_record "$3" "$2"
}
compare_record() {   # BASELINE RECORD [SUFFIX]: RECORD against BASELINE case by case, raw and post-processed, as RECORD/compare_{raw,pp}SUFFIX
    $bs cv compare "$rec/$1" "$rec/$2" --raw --out "$rec/$2/compare_raw${3:-}"
    $bs cv compare "$rec/$1" "$rec/$2" --out "$rec/$2/compare_pp${3:-}"
}
record_soup() {   # SOUP RECORD BASELINE: score_views, and the soup's recipe (each fold's summary and config) in RECORD
    score_views "$@"
    record_folds "$1" "$rec/$2" summary.json config.yaml
}
soup_round() {   # CONFIG NAME BASELINE: each fold's shipped member (as the bundle stores it) trains CONFIG's continuation
    # as runs/unet25d_pool_NAME and averages with the member (runs/unet25d_pool_long_soup_NAME); the soup is scored in
    # three views as record cv_soup_NAME_views against BASELINE, the continuation's logs kept as record cv_NAME
    local members=runs/unet25d_pool_long_soup_views3 run=runs/unet25d_pool_$2 soup=runs/unet25d_pool_long_soup_$2
    $bs bundle members $members --bundle bundles/brats_mri_2p5d_segmentation
    continue_over_bce "$1" $run
    $bs cv average $members $run --out $soup --name unet25d_pool_soup_$2
    record_soup $soup cv_soup_$2_views "$3"
    record_trained $run:cv_$2
}
record_trained() {   # RUN:RECORD...: each trained run's logs and curves into its record
    local pair
    for pair in "$@"; do record_folds "${pair%%:*}" $rec/${pair##*:} summary.json config.yaml metrics.csv curves.png; done
}
ship() {   # SOUP RECORD: SOUP (scored in three views as SOUP_views) becomes the bundle's ensemble, its quality calibration refitted; metadata.json's cv_record must then name RECORD
    cp "$1"_views/postprocessing.json "$1"/
    $bs cv export "$1" --views axial,coronal,sagittal
    $bs cv quality "$1"_views --bundle bundles/brats_mri_2p5d_segmentation --out $rec/$2
    strata $2
}
strata() {   # RECORD: its out-of-fold Dice by ground-truth ET and TC volume (the model card's "Where the misses are")
    $bs cv strata "$rec/$1" --root extra="$extra"
    $bs cv strata "$rec/$1" --root extra="$extra" --region TC
}
continue_over_bce() {   # CONFIG OUT: a 3-epoch continuation, CONFIG read over stage 3's configs (it names the weights it starts from)
    $bs cv train configs/unet25d_pool.yaml configs/unet25d_pool_long.yaml configs/unet25d_pool_bce.yaml "$1" --out "$2" --root extra="$extra" --quiet
}
record_partial() {   # RUN RECORD: score a run of some folds, keep its scores and logs in RECORD, compare case by case with stage 1 and 0.12.0
    local dest=$rec/$2 base
    $bs cv score "$1" --root extra="$extra"
    record_scores "$1" "$dest"
    record_folds "$1" "$dest" summary.json config.yaml metrics.csv curves.png
    for base in cv cv_soup_et_case_views; do
        compare_record $base "$2" _$base
    done
}
