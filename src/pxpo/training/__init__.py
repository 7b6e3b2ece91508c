"""Training: the typed config tree (:mod:`.config`), the loop (:mod:`.trainer`), run artefacts (:mod:`.artifacts`)."""
