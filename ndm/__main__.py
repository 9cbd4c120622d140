"""`python -m ndm ...` is the `ndm` command (what the Snakemake rules call)."""

import sys

from ndm.cli.native_threads import limit_native_threads

limit_native_threads(sys.argv[1:])  # before numpy and torch load their thread pools

from ndm.cli.main import main  # noqa: E402

sys.exit(main())
