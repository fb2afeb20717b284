"""tiling layer."""
