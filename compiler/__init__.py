"""Edge kernel compiler: LLM kernels as TVM tensor expressions, scheduled, tuned and cross-compiled per target.

Kept import-free on purpose: `compiler.runtime` must import on a board that has only the TVM runtime.
"""
