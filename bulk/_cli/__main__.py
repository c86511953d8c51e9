"""``python -m bulk._cli``: the ``bulk`` command."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
