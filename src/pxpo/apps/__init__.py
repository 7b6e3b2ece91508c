"""Feedback apps: ``pxpo refine`` (a person's strokes on one picture, round after round) and
``pxpo studio`` (the same rounds in a web page), sharing one rounds module."""
