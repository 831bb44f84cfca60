"""``python -m bench``: the whole benchmark suite (see :mod:`bench.run`)."""

import sys

from bench.run import main

sys.exit(main())
