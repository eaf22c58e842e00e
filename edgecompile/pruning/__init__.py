"""Visual-token pruning under low-bit inference (QUOTA, seed 003): the offline half.

``allocation`` turns per-layer low-bit sensitivity into a keep-ratio schedule (the pruning recipe);
``score`` is the numpy reference of the composite token score and top-k selection that the compiled
scoring subgraph must reproduce. Pure numpy: nothing here imports torch.
"""
