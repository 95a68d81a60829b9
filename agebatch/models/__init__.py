"""Models: what a model needs to be used (the card) and how to build one (builders need Keras)."""
