"""Reading and writing pixels: DICOM, PNG/JPG/TIFF, NIfTI, and keeping patient identifiers out.

Modules
-------
* ``images``: read_image / read_mask for every supported format, PNG and NIfTI writers
* ``dicom``: DICOM files and series folders (modality LUT, VOI window, MONOCHROME1)
* ``nifti``: ITK-SNAP NIfTI label maps and images
* ``resize``: one resizer for images (area/bilinear) and masks (nearest)
* ``privacy``: pseudonyms and hashed names for DICOM outputs

This ``__init__`` imports nothing; import from the modules.
"""
