"""Evaluation: the dataset x attack x defence grid (``python -m evaluation``), its datasets, defences, summary,
report and plots. Above the core library, the attacks and training; below the demo's policy (see docs/DESIGN.md,
"Layers")."""
