"""Writing results for other tools: label and overlay PNG, NIfTI, DICOM SEG, measurements.

Modules
-------
* ``bundle``: the standard exports of a label map
* ``dicom_seg``: DICOM SEG (highdicom) and its reader

This ``__init__`` imports nothing; import from the modules.
"""
