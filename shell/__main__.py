"""`python -m pomocore`: the `pomocore` command."""

import sys

from pomocore.cli import main

sys.exit(main())
