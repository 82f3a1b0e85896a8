"""The brainseg3d web demo (Streamlit): ``brainseg3d app [--port N]``.

Upload a case (four BraTS-named NIfTI files or one 4D NIfTI, optionally its ground truth) or
pick the shipped sample, segment it with the bundle, browse axial / coronal / sagittal slices
with the label overlay, read per-region volumes (and Dice against the ground truth), compare
bundles, and download the mask, report and Slicer colour table.

* :mod:`brainseg3d.app.launch`: ``launch(port)`` starts ``streamlit run`` on localhost.
* :mod:`brainseg3d.app.core`: pure helpers (upload checks, overlay rendering, tables).
* ``streamlit_app.py``: the page (needs ``pip install 'brainseg3d[web]'``).

Research use only. Not a medical device.
"""
