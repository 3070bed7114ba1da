"""Augmentation and controlled domain shifts.

Modules
-------
* ``augment``: the paper's augmentations (albumentations)
* ``offline``: offline expansion of a training split
* ``scanner``: intensity augmentation for other scanners and sequences
* ``fov``: field-of-view shifts (zoom, a smaller matrix)
* ``shift``: simulated scanner, sequence and field-of-view shifts

This ``__init__`` imports nothing; import from the modules.
"""
