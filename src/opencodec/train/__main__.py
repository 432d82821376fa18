"""``python -m opencodec.train CONFIG [key=value ...]`` (also under ``torchrun``)."""

import sys

from .solver import main

sys.exit(main())
