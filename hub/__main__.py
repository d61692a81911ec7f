"""`python -m hub`: publishing and pulling from the command line (`hub.cli`).

Kept to the one call, so that the CLI and its tests share `main`.
"""

from hub.cli import main

raise SystemExit(main())
