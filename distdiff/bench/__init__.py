"""Benchmarks: side-by-side measurements behind `launch/bench*.py` (scaffolding, not a layer: they may
import any package; nothing in the library imports them)."""
