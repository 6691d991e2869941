"""`python -m qubes_portfwd.lab …` is `qubes-lab …`."""

import sys

from .cli import main

sys.exit(main())
