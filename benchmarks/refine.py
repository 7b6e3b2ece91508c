"""Refinement from brush strokes, measured over seeds; see ``pxpo.bench.refine`` (``--help``)."""

import sys

from pxpo.bench.refine import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
