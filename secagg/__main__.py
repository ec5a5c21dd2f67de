"""``python -m secagg`` runs the ``secagg`` command line."""

import sys

from secagg.cli import main

sys.exit(main())
