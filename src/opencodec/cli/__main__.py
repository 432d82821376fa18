"""``python -m opencodec.cli ...`` runs the ``opencodec`` command."""

import sys

from .main import main

if __name__ == "__main__":
    sys.exit(main())
