"""``python -m tunevl`` (what ``torchrun -m tunevl train ...`` runs)."""

import sys

from tunevl.cli import main

sys.exit(main())
