"""`python -m ndm ...` is the `ndm` command (what the Snakemake rules call)."""

import sys

from .cli import main

sys.exit(main())
