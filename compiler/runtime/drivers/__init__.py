"""One driver per backend: how a build's kernels are called on this machine (see compiler.runtime.DRIVERS)."""
