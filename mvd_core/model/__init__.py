"""The model every backend builds: canonical parameter names, shapes and init; the losses."""
