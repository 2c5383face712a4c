// ggml's CPU matrix-vector product (one thread), repeated CALLS times: the llama.cpp peer of our GEMVs
// in the ARM cycle model (compiler/benchmarks/llama_cpp_arm.py counts one call as the difference of two runs).
#include <stdio.h>
#include <stdlib.h>
#include "ggml.h"
#include "ggml-cpu.h"

int main(int argc, char **argv) {
    if (argc != 6) { fprintf(stderr, "usage: gemv TYPE N K M CALLS\n"); return 2; }
    enum ggml_type type = (enum ggml_type)atoi(argv[1]);
    int n = atoi(argv[2]), k = atoi(argv[3]), m = atoi(argv[4]), calls = atoi(argv[5]);
    struct ggml_init_params params = { (size_t)n * k * 4 + (size_t)k * m * 8 + (size_t)n * m * 8 + (64 << 20), NULL, false };
    struct ggml_context *ctx = ggml_init(params);
    float *src = malloc(sizeof(float) * (size_t)n * k);
    unsigned s = 1;
    for (size_t i = 0; i < (size_t)n * k; i++) { s = s * 1103515245u + 12345u; src[i] = ((s >> 8) & 0xffff) / 32768.0f - 1.0f; }
    struct ggml_tensor *w = ggml_new_tensor_2d(ctx, type, k, n);
    ggml_quantize_chunk(type, src, w->data, 0, n, k, NULL);
    struct ggml_tensor *x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, k, m);
    for (int i = 0; i < k * m; i++) ((float *)x->data)[i] = src[i] * 0.5f;
    struct ggml_tensor *y = ggml_mul_mat(ctx, w, x);
    struct ggml_cgraph *graph = ggml_new_graph(ctx);
    ggml_build_forward_expand(graph, y);
    for (int c = 0; c < calls; c++) ggml_graph_compute_with_ctx(ctx, graph, 1);
    printf("%f\n", ((float *)y->data)[0]);
    return 0;
}
