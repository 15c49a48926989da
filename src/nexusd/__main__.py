"""`python -m nexusd` is the `nexusd` executable."""

import sys

from nexusd.cli import main

sys.exit(main())
