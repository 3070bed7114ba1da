"""Run folders: what ``train`` writes and everything else reads (run.json, split, versions).

Modules
-------
* ``folder``: create, describe and read run folders; library versions

This ``__init__`` imports nothing; import from the modules.
"""
