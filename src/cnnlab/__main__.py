"""`python -m cnnlab ...` is the same as the `cnnlab` console script."""

from cnnlab.cli import main

raise SystemExit(main())
