"""``python -m impeccable.cli``: the ``impeccable`` command."""

import sys

from .main import main

sys.exit(main())
