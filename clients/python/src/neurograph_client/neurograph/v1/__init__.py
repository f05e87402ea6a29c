"""Stubs generated from proto/neurograph/v1/*.proto by clients/python/generate.py: do not edit
the *_pb2*.py and *.pyi files by hand; rerun the script after a proto change."""
