"""``python -m m6gen <command>``: the same as the ``m6gen`` command (and what ``torchrun -m m6gen`` runs)."""

import sys

from m6gen.commands import main

sys.exit(main())
