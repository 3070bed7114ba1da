"""Data sets: the manifest CSV, its checks, patient-level splits, the default data sets and the phantoms.

Modules
-------
* ``manifest``: load, validate, split and save manifests (the public API)
* ``table``: the Manifest table
* ``checks``: manifest validation that reports every problem at once
* ``split``: patient-level 6:2:2 splits and k-fold
* ``datasets``: the default data sets of data_manifest.csv
* ``synth/``: synthetic cervical phantoms with known geometry

This ``__init__`` imports nothing; import from the modules.
"""
