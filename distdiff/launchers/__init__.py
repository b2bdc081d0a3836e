"""How runs are launched: one local process, or Ray Train workers."""
