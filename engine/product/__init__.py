"""Product synthesis: a product photo's cut-out placed in generated scenes, returned as layers.

Torch-free modules (scenes, request, mask, compose, layers) are shared with the web process; ``segment``
and ``synthesis`` run the models on the worker.
"""
