/*
 * A QEMU TCG plugin (qemu-user 7.2 API) that counts how many times each translated block runs.
 *
 *   qemu-aarch64 -plugin libekc_block_counts.so,out=FILE program ...
 *
 * At exit it writes one line per block that ran: "start end instructions executions" (guest
 * virtual addresses in hex, end exclusive). The counts are exact: an inline add per block, no
 * sampling. Blocks translated more than once (same range) are summed. A single-threaded guest is
 * assumed (the cycle model runs the kernels on one thread).
 */
#include <glib.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

typedef struct {
    uint64_t start, end;
    uint64_t instructions;
    uint64_t executions;
} Block;

static GHashTable *blocks; /* "start:end" -> Block */
static GMutex lock;
static char *out_path;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    size_t n = qemu_plugin_tb_n_insns(tb);
    struct qemu_plugin_insn *last = qemu_plugin_tb_get_insn(tb, n - 1);
    uint64_t start = qemu_plugin_tb_vaddr(tb);
    uint64_t end = qemu_plugin_insn_vaddr(last) + qemu_plugin_insn_size(last);
    char key[48];
    snprintf(key, sizeof key, "%" PRIx64 ":%" PRIx64, start, end);

    g_mutex_lock(&lock);
    Block *block = g_hash_table_lookup(blocks, key);
    if (block == NULL) {
        block = g_new0(Block, 1);
        block->start = start;
        block->end = end;
        block->instructions = n;
        g_hash_table_insert(blocks, g_strdup(key), block);
    }
    g_mutex_unlock(&lock);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &block->executions, 1);
}

static void write_counts(gpointer key, gpointer value, gpointer file)
{
    Block *block = value;
    if (block->executions)
        fprintf(file, "%" PRIx64 " %" PRIx64 " %" PRIu64 " %" PRIu64 "\n", block->start, block->end,
                block->instructions, block->executions);
}

static void write_all(qemu_plugin_id_t id, void *data)
{
    FILE *file = fopen(out_path, "w");
    if (file == NULL) {
        fprintf(stderr, "block_counts: cannot write %s\n", out_path);
        return;
    }
    g_mutex_lock(&lock);
    g_hash_table_foreach(blocks, write_counts, file);
    g_mutex_unlock(&lock);
    fclose(file);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0)
            out_path = g_strdup(argv[i] + 4);
    }
    if (out_path == NULL) {
        fprintf(stderr, "block_counts: give the output file: -plugin libekc_block_counts.so,out=FILE\n");
        return -1;
    }
    blocks = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, write_all, NULL);
    return 0;
}
