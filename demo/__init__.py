"""The demo's policy: what a click in the app does, without widgets (``app.py`` only wires them). Compare, the attack
lab, a Train click, the Benchmark tab, where visitors' reminders live, the shared models and where a call runs. The
top layer below ``app.py`` and ``benchmarks/`` (see docs/DESIGN.md, "Layers")."""
