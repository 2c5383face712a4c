"""Running a real model on our kernels: GGUF reading, its tokenizer, the kernels and weights a
model needs, the decoder loop, sampling, `run`, and llama.cpp on the same file as the reference."""
