"""The shipped models (package data) and their model card, README.md.

Nothing to import here: `speechvq.inference.loading` maps a name to a file
in this folder and checks its sha256.
"""
