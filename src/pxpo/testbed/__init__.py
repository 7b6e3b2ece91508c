"""The shapes testbed: the world (pictures, captions, exact label maps), the embedded models and their
pretraining, the model-free evaluator and the segmenter. It plugs into the core by name
(:mod:`pxpo.testbed.plugin`): the ``shapes-world`` prompts, the ``segment-*`` rewards and the
``shapes-tiny``/``shapes-parts`` models."""
