"""`python -m ndm ...` is the `ndm` command (what the Snakemake rules call)."""

import sys

from ndm.cli.main import main

sys.exit(main())
