"""`python -m speechvq.cli`: the same as the `speechvq` command."""

import sys

from speechvq.cli import main

sys.exit(main())
