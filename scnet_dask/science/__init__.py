"""science layer."""
