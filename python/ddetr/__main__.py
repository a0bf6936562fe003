"""`python -m ddetr ...` (what torchrun runs: `torchrun --nproc_per_node K -m ddetr train ...`)."""

import sys

from .cli import main

sys.exit(main())
