"""`python -m qubes_lab …` is `qubes-lab …`."""

import sys

from .cli import main

sys.exit(main())
