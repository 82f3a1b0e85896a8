# Vendored copies of brainseg3d/bundle_components.py (components.py), brainseg3d/data/checks.py (checks.py) and
# brainseg3d/data/cases.py (cases.py), so that the bundle runs with MONAI alone.
# Do not edit here: edit the package and copy (tests/test_bundle.py, tests/test_reliability.py fail when they differ).
# Configs reach this code through "_target_": "scripts.components.X" (with "_mode_": "callable"
# to pass a function), not through "$scripts...." expressions: MONAI 1.6 runs "$import" lines
# before the bundle root is on sys.path when the bundle is run from another folder.
