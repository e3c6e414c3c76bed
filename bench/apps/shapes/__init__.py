"""A replkit app whose routes a helper builds and whose handler lives in another module:
the save -> served scenario edits ``handlers.py`` (copied into a scratch directory)."""
