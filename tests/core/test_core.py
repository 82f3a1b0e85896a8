"""The bundle boundary (:mod:`brainseg3d.core`): the bundle's ``scripts/`` carries every core
module verbatim (what they may import: ``tests/test_bundle.py``,
``test_vendored_modules_import_nothing_else_from_the_package``)."""

from __future__ import annotations

from pathlib import Path

from brainseg3d.bundle import VENDORED, sync_bundle

CORE = Path(__file__).resolve().parents[2] / "brainseg3d" / "core"


def test_every_core_module_is_vendored_in_the_bundle():
    assert sorted(VENDORED.values()) == sorted(f"core/{p.name}" for p in CORE.glob("*.py") if p.name != "__init__.py")
    drift = sync_bundle(check=True)
    assert not drift, f"the bundle's copies differ from brainseg3d/core: {drift}; run `brainseg3d bundle sync`"


def test_the_rest_of_the_package_takes_the_label_vocabulary_from_core():
    """One definition of the labels: no other module assigns these names."""
    import ast

    names = {"LABEL_SCHEMES", "LABEL_NAMES", "LABEL_COLOURS", "REGIONS", "REGION_NAMES", "MODALITIES", "VIEWS"}
    for path in sorted((CORE.parent).rglob("*.py")):
        if path.parent == CORE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            for t in targets:
                assert not (isinstance(t, ast.Name) and t.id in names), f"{path.relative_to(CORE.parent)}:{node.lineno} defines {t.id} again"


def test_one_check_of_view_names():
    """``as_views`` is the one check every views argument goes through (network, dataset,
    predictor, CLI): a name or a list in, distinct known names out, or a ValueError naming them."""
    import pytest

    from brainseg3d.core.labels import as_views

    assert as_views("coronal") == ["coronal"]
    assert as_views(("sagittal", "axial")) == ["sagittal", "axial"]
    for bad in ([], ["axial", "axial"], ["transverse"], "Axial"):
        with pytest.raises(ValueError, match="views must be distinct names"):
            as_views(bad)
    for path in sorted((CORE.parent).rglob("*.py")):
        assert path.name == "labels.py" or "not in VIEWS" not in path.read_text(), f"{path.relative_to(CORE.parent)} checks view names itself; use as_views"
