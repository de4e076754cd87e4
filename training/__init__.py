"""Training: detector fitting (``training.detector``: its config, pairs and features, probe, calibration and LLaVA
check in ``training.detector_config``, ``.features``, ``.probe``, ``.calibration``, ``.llava``), SAPT soft-prompt
training (``training.sapt``), LoRA alignment (``training.align``) and the learned harm judge (``training.judge``
trains it, ``reminder.judges`` loads it). Above the core library and the attacks (see docs/DESIGN.md, "Layers")."""
