"""``python -m keypress_ari`` is the ``keypress-ari`` command."""

from keypress_ari.cli import main

raise SystemExit(main())
