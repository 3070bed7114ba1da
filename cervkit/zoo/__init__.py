"""Shipped models: ready-made runs inside the package, their cards, and the recipe that builds them.

Modules
-------
* ``store``: where the shipped models live, their cards, the sha256 check, model-name resolution (read-only,
  no training code)
* ``recipes``: ``python -m cervkit zoo build NAME``: the one recipe per model, from scratch and seeded

Each model is a folder ``<name>/`` (a run folder) beside ``<name>.json`` and ``<name>.md`` (its card).

This ``__init__`` imports nothing; import from the modules.
"""
