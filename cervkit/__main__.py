"""``python -m cervkit …``: see :mod:`cervkit.cli`."""

from cervkit.cli import main

raise SystemExit(main())
