"""Jailbreak attacks: input builders (images, templates, prefills; the one registry in ``attacks.compose``) below
the core, and the optimisers (GCG, PGD, BAP) above it; see the layers in ``reminder/__init__.py``."""
