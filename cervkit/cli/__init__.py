"""The command line, ``python -m cervkit <command>`` (a stable contract, see DESIGN.md).

Modules
-------
* ``main``: the argument parser and the commands
* ``notebooks``: execute the notebooks headlessly (``make run``)

This ``__init__`` imports nothing; import from the modules.
"""
