"""Measurements from label maps: body shapes, endplates, level names, Cobb angles.

Modules
-------
* ``spine``: corners, endplates, heights, C2–C7 Cobb and adjacent angles
* ``levels``: level names for the bodies
* ``bodies``: per-body shape summary
* ``endplates``: side lines and corners of one body
* ``batch``: ``python -m cervkit measure``
* ``figures``: drawing the measurements

This ``__init__`` imports nothing; import from the modules.
"""
