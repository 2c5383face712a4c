"""`bench`: our kernels against what users would run instead (PyTorch, numpy, llama.cpp), side by
side in one process; goals, model-level estimates and charts."""
