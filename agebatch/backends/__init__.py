"""Ways of running a model, behind one interface (`base.Backend`) and one registry (`registry`).

`registry.load_backend(artifact)` opens a model file with the runtime its type calls
for; `resolve.resolve(model)` picks a .keras model's fastest verified export. Only the
chosen runtime is ever imported. This package's ``__init__`` imports nothing, so
importing one backend module never drags in the others.
"""
