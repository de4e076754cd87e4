"""Training: detector fitting (``training.detector``) and SAPT soft-prompt training (``training.sapt``)."""
