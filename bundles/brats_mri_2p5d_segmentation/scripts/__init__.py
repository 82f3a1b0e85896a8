# Vendored copies of brainseg3d/bundle_components.py and brainseg3d/data/cases.py, so that the
# bundle runs with MONAI alone. Do not edit here: edit the package and copy
# (tests/test_bundle.py fails when they differ).
