"""The per-pixel credit designs and scalar GRPO on the embedded flow model; see ``pxpo.bench.flow`` (``--help``)."""

import sys

from pxpo.bench.flow import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
