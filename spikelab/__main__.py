"""``python -m spikelab``: the command line (:mod:`spikelab.cli`)."""

import sys

from spikelab.cli import main

sys.exit(main())
