"""Foundations every stage shares: nothing here imports another cervkit subpackage.

Modules
-------
* ``config``: quick mode, the data folder, the outputs folder (read from the environment)
* ``device``: one CUDA-or-CPU rule for PyTorch and ultralytics
* ``errors``: the project's exception types
* ``files``: atomic writes, no silent overwrites, checksums
* ``image``: the Image every reader returns
* ``ultralytics_env``: importing ultralytics offline, inside a scope that restores what it changed
* ``version``: the package version

This ``__init__`` imports nothing; import from the modules.
"""
