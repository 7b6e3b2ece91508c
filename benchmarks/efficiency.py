"""PXPO against DDPO on the per-pixel task suite; see ``pxpo.bench.efficiency`` (``--help``)."""

import sys

from pxpo.bench.efficiency import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
