"""A notifier module whose import calls sys.exit, as a script-like module might."""

from __future__ import annotations

import sys

sys.exit(3)
