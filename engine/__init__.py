"""Model code: profiles, loading, the generation cascade.

Importing this package (and its ``profiles``, ``params`` and ``styles`` modules) does not import torch,
so the web process can validate parameters without loading any model code.
"""
