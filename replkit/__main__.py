"""``python -m replkit``: the ``replkit`` command."""

import sys

from replkit.cli import main

sys.exit(main())
