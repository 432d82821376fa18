"""MUSHRA listening test (ITU-R BS.1534-3 style): build, run in a browser, report.

::

    opencodec mushra build --set DIR --out TEST_DIR [--items-per-category N] [--seed S]
                           [--models NAME ...] [--bandwidths KBPS ...] [--baselines SPEC ...]
    opencodec mushra serve TEST_DIR [--host 127.0.0.1] [--port 8000] [--db PATH]
    opencodec mushra report TEST_DIR [--db PATH] [--out DIR] [-f]

* :mod:`.build` picks items from the evaluation manifests, makes the conditions (hidden
  reference, 3.5 kHz low-pass anchor, neural models and Opus/MP3 baselines) and writes WAV
  files plus ``test.json`` (:mod:`.spec` reads it back).
* :mod:`.server` serves the rating page (``static/``) with the standard library's HTTP
  server, validates every submission and stores the ratings with :mod:`.db` (SQLite).
* :mod:`.report` applies the post-screening (a listener who rates the hidden reference
  below 90 in more than 15 % of the trials they rated is excluded) and reports means with
  95 % Student-t confidence intervals, as Markdown, CSV, JSON and a PNG plot.
"""

from .spec import (ANCHOR_KIND, HIDDEN_REFERENCE_KIND, Condition, MushraError, MushraTest,
                   Trial, load_test)

__all__ = ["ANCHOR_KIND", "HIDDEN_REFERENCE_KIND", "Condition", "MushraError", "MushraTest",
           "Trial", "load_test"]
