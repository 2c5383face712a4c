// llama.cpp itself (libllama + ggml's CPU backend, one thread) running a GGUF model: PREFILLS prefills of a fixed
// synthetic prompt (the KV cache cleared before each, so every one is the same work), then DECODES single tokens
// after the last. The whole-model peer in the ARM cycle model: compiler/benchmarks/llama_cpp_arm.py counts
// one prefill or one decoded token as the difference of two runs.
#include <stdio.h>
#include <stdlib.h>
#include "llama.h"

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static int fail(const char *what) {
    fprintf(stderr, "llama_model: %s\n", what);
    return 1;
}

// The batch of tokens[0..n) at positions first.., logits of the last only.
static void fill(struct llama_batch *batch, const llama_token *tokens, int n, int first) {
    batch->n_tokens = n;
    for (int i = 0; i < n; i++) {
        batch->token[i] = tokens[i];
        batch->pos[i] = first + i;
        batch->n_seq_id[i] = 1;
        batch->seq_id[i][0] = 0;
        batch->logits[i] = i == n - 1;
    }
}

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: llama_model GGUF PROMPT_TOKENS PREFILLS DECODES\n"); return 2; }
    int prompt = atoi(argv[2]), prefills = atoi(argv[3]), decodes = atoi(argv[4]);
    if (prompt < 1 || prefills < 1 || decodes < 0) return fail("PROMPT_TOKENS and PREFILLS must be >= 1, DECODES >= 0");
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mparams = llama_model_default_params();
    mparams.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(argv[1], mparams);
    if (!model) return fail("cannot load the model");
    int vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    struct llama_context_params cparams = llama_context_default_params();
    cparams.n_ctx = prompt + decodes + 8;
    cparams.n_batch = cparams.n_ubatch = prompt;
    cparams.n_threads = cparams.n_threads_batch = 1;
    cparams.n_seq_max = 1;
    struct llama_context *ctx = llama_init_from_model(model, cparams);
    if (!ctx) return fail("cannot create the context");

    llama_token *tokens = malloc(sizeof(llama_token) * (size_t)(prompt + decodes));
    for (int i = 0; i < prompt + decodes; i++) tokens[i] = (1000 + (i * 7919) % 20000) % vocab;
    struct llama_batch batch = llama_batch_init(prompt, 0, 1);
    for (int p = 0; p < prefills; p++) {
        llama_memory_clear(llama_get_memory(ctx), false);
        fill(&batch, tokens, prompt, 0);
        if (llama_decode(ctx, batch) != 0) return fail("the prefill failed");
    }
    for (int d = 0; d < decodes; d++) {
        fill(&batch, tokens + prompt + d, 1, prompt + d);
        if (llama_decode(ctx, batch) != 0) return fail("a decode failed");
    }
    float *logits = llama_get_logits_ith(ctx, -1);
    if (!logits) return fail("no logits");
    int best = 0;
    for (int i = 1; i < vocab; i++) if (logits[i] > logits[best]) best = i;
    printf("%d %f\n", best, logits[best]);
    llama_batch_free(batch);
    free(tokens);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
