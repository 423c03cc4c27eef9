"""`python -m pcavs ...`: the same as the `pcavs` command."""
import sys

from .app.cli import main

sys.exit(main())
