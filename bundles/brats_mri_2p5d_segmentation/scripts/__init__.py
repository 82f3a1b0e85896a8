# Vendored copies of brainseg3d/core/ (components.py, cases.py, checks.py, labels.py, training.py), so that the bundle runs with MONAI alone.
# Do not edit here: edit the package and run `brainseg3d bundle sync` (tests/test_bundle.py fails when they differ).
# Configs reach this code through "_target_": "scripts.components.X" (with "_mode_": "callable"
# to pass a function), not through "$scripts...." expressions: MONAI 1.6 runs "$import" lines
# before the bundle root is on sys.path when the bundle is run from another folder.
