"""Preprocessing: :mod:`.transforms` (the invertible MONAI chain shared by training, validation
and inference), :mod:`.registration` (raw scans on different grids onto one grid, SimpleITK) and
:mod:`.skullstrip` (brain extraction for inputs that are not skull-stripped)."""
