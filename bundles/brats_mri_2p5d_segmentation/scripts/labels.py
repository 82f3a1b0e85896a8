"""The vocabulary, defined once: BraTS label values, their names and colours, the nested
evaluation regions, and the slice views of a RAS volume.

=======  ==========================  ==================  ===============
value    name                        brats (2018-2021)   brats2023 (2023+)
=======  ==========================  ==================  ===============
0        background                  0                   0
1        necrotic tumour core        1                   1
2        peritumoral edema           2                   2
ET       enhancing tumour            4                   3
=======  ==========================  ==================  ===============

Regions, nested: WT (whole tumour) = 1 + 2 + ET, TC (tumour core) = 1 + ET, ET. Label 4 means
enhancing tumour only up to BraTS 2021 (BraTS 2024 gives 4 another meaning): the scheme is
always explicit (``labels="brats"`` or ``"brats2023"``).
"""

from __future__ import annotations

__all__ = ["LABEL_SCHEMES", "LABEL_NAMES", "LABEL_COLOURS", "REGIONS", "REGION_NAMES", "VIEWS", "as_views"]

#: enhancing-tumour value written for each label scheme
LABEL_SCHEMES: dict[str, int] = {"brats": 4, "brats2023": 3}

#: BraTS label value -> name, for both label schemes
LABEL_NAMES: dict[str, dict[int, str]] = {
    scheme: {0: "background", 1: "necrotic tumour core", 2: "peritumoral edema", et: "enhancing tumour"}
    for scheme, et in LABEL_SCHEMES.items()
}

#: colours (RGB 0-255) as in 3D Slicer's BraTS-style tables: core red, edema green, ET yellow
LABEL_COLOURS: dict[int, tuple[int, int, int]] = {1: (255, 0, 0), 2: (0, 200, 0), 3: (255, 255, 0), 4: (255, 255, 0)}

#: the nested evaluation regions, in the order of the network's output channels
REGIONS: tuple[str, ...] = ("WT", "TC", "ET")

#: region -> name, for tables and legends
REGION_NAMES: dict[str, str] = {"WT": "whole tumour (WT)", "TC": "tumour core (TC)", "ET": "enhancing tumour (ET)"}

#: slice view -> the spatial axis of a RAS volume ``[X, Y, Z]`` it slices (MONAI's ``SliceInferer``
#: ``spatial_dim``): a 2.5D model reads slices of one view, its neighbours along that axis
VIEWS: dict[str, int] = {"axial": 2, "coronal": 1, "sagittal": 0}


def as_views(views) -> list[str]:
    """One view name or a sequence of them -> a list of distinct names of :data:`VIEWS`.

    Args:
        views: ``"axial"``, ``["axial", "coronal"]``, ...

    Raises:
        ValueError: an empty list, an unknown name or a repeated one (the message names them).

    Example:
        >>> as_views("coronal")
        ['coronal']
    """
    names = [views] if isinstance(views, str) else list(views)
    if not names or any(v not in VIEWS for v in names) or len(set(names)) < len(names):
        raise ValueError(f"views must be distinct names from {sorted(VIEWS)}, got {names!r}")
    return names
