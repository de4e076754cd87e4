"""Jailbreak attack input builders (images, templates, prefills)."""
