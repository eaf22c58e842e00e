"""Model families: how to load a checkpoint and split it into exportable components."""
