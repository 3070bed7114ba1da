"""``python -m cervkit …``: see :mod:`cervkit.cli.main`."""

from cervkit.cli.main import main

raise SystemExit(main())
