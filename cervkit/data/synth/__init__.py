"""Synthetic lateral cervical phantoms (X-ray-like and T2-MRI-like) with exact C2–C7 geometry.

Modules
-------
* ``phantom``: make_phantom and the Phantom record
* ``dataset``: write a phantom folder with its manifest
* ``geometry``: the column's anatomy in mm, laid out in pixels
* ``parts``: structures around the bodies
* ``draw``: drawing primitives
* ``xray, mri``: the two renderers

This ``__init__`` imports nothing; import from the modules.
"""
