"""``python -m oftp2_provider.demo``."""

from __future__ import annotations

import sys

from .runner import main

sys.exit(main())
