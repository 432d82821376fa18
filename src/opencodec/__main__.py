"""``python -m opencodec ...`` runs the ``opencodec`` command (and so ``torchrun -m opencodec``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
