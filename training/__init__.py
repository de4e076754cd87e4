"""Training: detector fitting (``training.detector``: its pairs and features, probe, calibration and LLaVA check in
``training.features``, ``.probe``, ``.calibration``, ``.llava``), SAPT soft-prompt training (``training.sapt``), LoRA
alignment (``training.align``) and the learned judge (``training.judge``)."""
