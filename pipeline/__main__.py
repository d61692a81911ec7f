"""`python -m pipeline`: the library's command line (`pipeline.cli`).

Kept to the one call, so that the CLI and its tests share `main`.
"""

from pipeline.cli import main

raise SystemExit(main())
