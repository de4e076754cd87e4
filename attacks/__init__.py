"""Jailbreak attacks, on top of the core library: input builders (FigStep, MM-SafetyBench typography, prefills,
templates; pure functions of text and images, with the one registry in ``attacks.compose``) and the optimisers (GCG,
PGD, BAP), which run on a model. See docs/DESIGN.md, "Layers"."""
