"""GPU family (Vulkan: Mali, Adreno, any 1.1 device): layouts and schedules from the target's GPU facts."""

from __future__ import annotations

from typing import Any

from schedules.gemm_facts import GEMM_OPS, float_weights, gemm_n, int4_float_weights
from schedules.layouts import GpuLayout


def buckets(spec, target) -> list[dict]:
    if spec.op in GEMM_OPS:
        return [{"M": 1}, {}]
    return [{}]


def layout(spec, target, bucket: dict) -> GpuLayout:
    gpu = target.gpu
    attention = _attention_layout(spec, gpu) if spec.op.startswith("attention") else {}
    return GpuLayout(
        bucket=dict(bucket),
        # int8 GEMMs: SPV_KHR_integer_dot_product where the target says the device has it fast.
        int8_dot="spirv_dot4" if gpu.int8_dot else "none",
        # int8/int4 weights as [N/4, K/4, 4, 4] tiles: one thread's 4 k-values are one 32-bit word;
        # float-activation GEMMs: columns per tile, as many as a subgroup reads side by side.
        n_tile=_float_tile(spec, gpu) if float_weights(spec) else 4,
        k_tile=4,
        act_offset=0,
        m_tile=1,
        rope_dtype="float32",  # mobile GPUs have no float64
        # W4A16 GEMMs on GPUs with fast fp16 (Mali, Adreno: twice the fp32 rate): products in fp16,
        # sums in fp32 (ops/qgemm_w4a16.py). Not W8A16: an int8 weight times an activation of a few
        # hundred overflows fp16.
        float_math="float16" if gpu.fp16 and int4_float_weights(spec) else "float32",
        # W4A16: the group terms (-8 x sums, block minimums) join the scaled group sums, so the
        # scales are read once and no separate pass runs (ops/qgemm_w4a16.py).
        group_terms_in_sum=True,
        **attention,
    )


def _attention_layout(spec, gpu) -> dict[str, Any]:
    """Workgroup size and the tiles that fit the target's shared memory: prefill stages K and V
    tiles of kv_tile keys (2 x kv_tile x D floats); decode keeps the group's queries, a chunk's
    scores and per-thread partials (G x (D + split_len + threads) floats)."""
    d = spec.dim("d")
    g = spec.dim("hq") // spec.dim("hkv")
    threads = gpu.max_threads
    budget = gpu.shared_memory_bytes // 4  # floats
    kv_tile = next((t for t in (64, 32, 16, 8, 4, 2, 1) if 2 * t * d <= budget), None)
    split = next((s for s in (512, 256, 128, 64, 32) if g * (d + s + threads) + 2 * g <= budget), None)
    if kv_tile is None or split is None:
        raise ValueError(f"{spec.name}: head dim {d} with {g} heads per KV head does not fit "
                         f"{gpu.shared_memory_bytes} bytes of shared memory")
    return {"threads": threads, "kv_tile": kv_tile, "split_len": split}


def _float_tile(spec, gpu) -> int:
    n = gemm_n(spec)
    return next(t for t in (gpu.subgroup_size, 16, 8, 4, 2) if n % t == 0)


def layout_choices(spec, target, bucket: dict) -> list[GpuLayout]:
    """Only the default: the GPU layouts follow from the device's limits (structural GPU tuning is
    still to come)."""
    return [layout(spec, target, bucket)]


def schedule(sch, spec, target, bucket: dict, layout: GpuLayout):
    """Schedule in place (attention is thread-bound already: compiler/ops/attention_gpu.py).

    GEMMs with group scales (every float-activation GEMM, int GEMMs with block scales) keep each
    group's partial sum in a register and scale it there: the thread that owns an output loops over
    groups (schedule_grouped_gemv / _gemm). Per-channel int GEMMs have one group, the whole K. One-
    token GEMMs (decode) split the reduction over threads (cross-thread reduction); other GEMMs give
    each thread a register tile. The stages around get one thread per output element. All choices
    are tunable knobs. Quantisation: TVM's rule-based GPU schedules (dlight), sized by the target's
    thread limit, replayed onto `sch`."""
    if spec.op.startswith("attention"):
        return sch
    if spec.op in GEMM_OPS:
        for name in ("w_scale_f32", "w_min_f32"):  # float16 block scales widened where they are used
            if _has_block(sch, name):
                sch.compute_inline(sch.get_sblock(name))
        grouped = _has_block(sch, "ysum")
        if bucket.get("M") == 1:
            (schedule_grouped_gemv if grouped else schedule_gemv)(sch, target.gpu)
        else:
            (schedule_grouped_gemm if grouped else schedule_gemm)(sch, target.gpu)
        return sch
    scheduled = _dlight(sch.mod["main"], spec, target)
    scheduled.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch


def _has_block(sch, name: str) -> bool:
    """Asked of a copy of the IR: the schedule's own trace must not record the question."""
    from tvm import s_tir

    try:
        s_tir.Schedule(sch.mod).get_sblock(name)
    except s_tir.schedule.ScheduleError:
        return False
    return True


def _register_tiles(sch, block, i, j, gpu):
    """Knobs and splits of a register-tiled GEMM: each thread owns a `gemm_rows` x `gemm_cols` tile
    of outputs (every activation value it loads serves gemm_cols columns, every weight value
    gemm_rows rows), a workgroup `gemm_ty` x `gemm_tx` threads. Returns ((io, it, ii), (jo, jt, ji))
    with it/jt bound to threads."""
    from schedules.decisions import sample_choice

    # Every pairing of gemm_tx and gemm_ty fits a workgroup; default: a subgroup along the columns.
    # No gemm_ty of 1: with a one-thread threadIdx.y and a dynamic M, TVM 0.27's buffer compaction
    # sizes the register tile negative (`float acc_local[-2]`, which glslang rejects).
    tys = [2, 4]
    txs = [t for t in (4, 8, 16, 32, 64) if t * tys[-1] <= gpu.max_threads]
    tx = sample_choice(sch, "gemm_tx", block, txs, max(t for t in txs if t <= max(gpu.subgroup_size, txs[0])))
    ty = sample_choice(sch, "gemm_ty", block, tys, 4)
    rows = sample_choice(sch, "gemm_rows", block, [1, 2, 4, 8], 4)
    cols = sample_choice(sch, "gemm_cols", block, [1, 2, 4], 4)
    io, it, ii = sch.split(i, [None, ty, rows])
    jo, jt, ji = sch.split(j, [None, tx, cols])
    sch.bind(it, "threadIdx.y")
    sch.bind(jt, "threadIdx.x")
    return (io, it, ii), (jo, jt, ji)


def schedule_gemm(sch, gpu) -> None:
    """Any-length GEMM of one group (per-channel scales): register tiles (_register_tiles) over
    the accumulation block (i, g, j, reductions), g of extent 1."""
    acc = sch.get_sblock("acc")
    i, g, j, *reduction = sch.get_loops(acc)
    (io, it, ii), (jo, jt, ji) = _register_tiles(sch, acc, i, j, gpu)
    sch.reorder(io, g, jo, it, jt, *reduction, ii, ji)
    sch.bind(io, "blockIdx.y")
    sch.bind(sch.fuse(g, jo), "blockIdx.x")
    sch.reverse_compute_at(sch.cache_write(acc, 0, "local"), jt, preserve_unit_loops=True)
    sch.decompose_reduction(acc, reduction[0])
    _one_thread_per_element(sch, gpu, skip={"acc", "acc_local"})


def schedule_grouped_gemm(sch, gpu) -> None:
    """Any-length GEMM with group scales: register tiles (_register_tiles) over the scaled sum
    ysum(i, j; groups); per group, the tile's partial sums (acc) are computed in registers, scaled
    and added, so they never reach memory."""
    acc, ysum = sch.get_sblock("acc"), sch.get_sblock("ysum")
    i, j, groups = sch.get_loops(ysum)
    (io, it, ii), (jo, jt, ji) = _register_tiles(sch, ysum, i, j, gpu)
    sch.reorder(io, jo, it, jt, groups, ii, ji)
    sch.bind(io, "blockIdx.y")
    sch.bind(jo, "blockIdx.x")
    sch.reverse_compute_at(sch.cache_write(ysum, 0, "local"), jt, preserve_unit_loops=True)
    _group_sums_in_registers(sch, acc, groups, reduction_outside=True)
    sch.decompose_reduction(ysum, groups)
    _one_thread_per_element(sch, gpu, skip={"acc", "ysum", "ysum_local", "w_local"})


def _group_sums_in_registers(sch, acc, group_loop, *, reduction_outside: bool) -> None:
    """Compute the accumulation block inside `group_loop` into registers; with reduction_outside,
    its reduction loops go outside its tile loops (each loaded value then serves the whole tile).
    Unit loops are kept so the loop count, and with it the trace, does not depend on the knobs.
    Weight bytes are loaded as vectors where the layout allows (_vector_weight_loads)."""
    sch.compute_at(acc, group_loop, preserve_unit_loops=True)
    sch.set_scope(acc, 0, "local")
    loops = sch.get_loops(acc)
    reductions = sum(int(iv.iter_type) == 2 for iv in sch.get(acc).iter_vars)
    at = [sch.get(loop).same_as(sch.get(group_loop)) for loop in loops].index(True)
    tile, reduction = loops[at + 1:len(loops) - reductions], loops[len(loops) - reductions:]
    if reduction_outside and tile:
        sch.reorder(*reduction, *tile)
    sch.decompose_reduction(acc, reduction[0])
    _vector_weight_loads(sch, acc, reduction[0])


def _one_thread_per_element(sch, gpu, skip: set[str]) -> None:
    """Bind every other block's spatial loops (TE blocks: one loop per block iterator, in order)
    to threads; its reduction, if any, runs serially in the thread."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if sch.get(block).name_hint in skip:  # before get_loops: their loop counts vary with the knobs
            continue
        loops = sch.get_loops(block)
        iters = sch.get(block).iter_vars
        if any(sch.get(loop).thread_binding is not None for loop in loops):
            continue
        if len(loops) != len(iters):
            raise ValueError(f"block {sch.get(block).name_hint}: loops do not match its iterators")
        spatial = [loop for loop, iv in zip(loops, iters) if int(iv.iter_type) == 0] or [sch.add_unit_loop(block)]
        reduction = [loop for loop, iv in zip(loops, iters) if int(iv.iter_type) == 2]
        sch.reorder(*spatial, *reduction)
        outer, tx = sch.split(sch.fuse(*spatial), [None, gpu.max_threads])
        sch.bind(outer, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        if reduction:
            sch.decompose_reduction(block, reduction[0])


def schedule_gemv(sch, gpu) -> None:
    """One-token GEMM of one group (per-channel scales): `gemv_threads` threads split each column's reduction (combined across
    threads by TVM's cross-thread reduction), `gemv_cols` columns per workgroup."""
    from schedules.decisions import sample_choice

    acc = sch.get_sblock("acc")
    i, g, j, *reduction = sch.get_loops(acc)
    # Every pairing of the two knobs fits a workgroup; the default gives each column one subgroup
    # of reducing threads.
    columns = [1, 2, 4]
    threads = [t for t in (8, 16, 32, 64, 128) if t * columns[-1] <= gpu.max_threads]
    cols = sample_choice(sch, "gemv_cols", acc, columns, 4)
    reducers = sample_choice(sch, "gemv_threads", acc, threads,
                             max(t for t in threads if t <= max(gpu.subgroup_size, threads[0])))
    outer, ty = sch.split(sch.fuse(i, g, j), [None, cols])
    _, tx = sch.split(sch.fuse(*reduction) if len(reduction) > 1 else reduction[0], [None, reducers])
    sch.bind(outer, "blockIdx.x")
    sch.bind(ty, "threadIdx.y")
    sch.bind(tx, "threadIdx.x")
    _one_thread_per_element(sch, gpu, skip={"acc"})


def schedule_grouped_gemv(sch, gpu) -> None:
    """One-token GEMM with group scales: `gemv_cols` threads along x, each owning adjacent columns
    (as many as one vector load of their weight bytes covers: _weight_lanes), so a subgroup reads
    adjacent weight bytes; `gemv_threads` threads along y split the groups (combined by
    cross-thread reduction). Each thread computes a group's partial sums in registers, scales them
    and adds them."""
    from schedules.decisions import sample_choice

    acc, ysum = sch.get_sblock("acc"), sch.get_sblock("ysum")
    i, j, groups = sch.get_loops(ysum)
    # Every pairing of the two knobs fits a workgroup; default: a subgroup of column threads. The
    # groups split evenly: after rfactor, TVM 0.27 drops the bounds check of an uneven split from
    # the per-thread sums (a thread past the last group would add stale registers).
    ngroups = int(sch.get(groups).extent)
    splits = [t for t in (1, 2, 4) if ngroups % t == 0]
    columns = [c for c in (4, 8, 16, 32, 64) if c * 4 <= gpu.max_threads]
    cols = sample_choice(sch, "gemv_cols", ysum, columns, max(c for c in columns if c <= max(gpu.subgroup_size, 4)))
    threads = sample_choice(sch, "gemv_threads", ysum, splits, splits[-1])
    outer, tx, own = sch.split(sch.fuse(i, j), [None, cols, _weight_lanes(sch, acc, gpu)])
    ty, serial = sch.split(groups, [threads, None])
    sch.reorder(outer, tx, ty, serial, own)
    # Each thread first sums its groups for its columns (ysum_rf, in registers); then one cross-
    # thread reduction per column, whose reduction loop TVM needs innermost.
    partial = sch.rfactor(ty, factor_axis=0)  # the loop handles now belong to the final sum's nest
    sch.reorder(own, ty)
    sch.bind(outer, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")
    sch.bind(ty, "threadIdx.y")
    sch.compute_at(partial, tx, preserve_unit_loops=True)
    sch.set_scope(partial, 0, "local")
    split_of_groups, _, own_columns, groups_of_thread = sch.get_loops(partial)[2:]
    sch.reorder(groups_of_thread, own_columns)
    sch.bind(split_of_groups, "threadIdx.y")
    _group_sums_in_registers(sch, acc, groups_of_thread, reduction_outside=True)
    _one_thread_per_element(sch, gpu, skip={"acc", "ysum", "ysum_rf", "w_local"})


def _packed_weight(sch, acc):
    """(read index, buffer) of the accumulation's weight where it is [N/nt, K', nt] bytes (W4A16,
    W8A16: columns innermost), else None."""
    reads = [region.source for region in sch.get(acc).reads]
    return next(((i, b) for i, b in enumerate(reads)
                 if b.name == "w" and len(b.shape) == 3 and str(b.dtype) in ("int8", "uint8")), None)


def _weight_lanes(sch, acc, gpu) -> int:
    """Adjacent columns whose weight bytes one vector load covers: the target's vector width where
    the weight keeps columns innermost in tiles of a multiple of it (_packed_weight), else 1."""
    weight = _packed_weight(sch, acc)
    lanes = gpu.vector_width
    return lanes if weight is not None and int(weight[1].shape[-1]) % lanes == 0 else 1


def _vector_weight_loads(sch, acc, reduction) -> None:
    """Load a thread's adjacent columns' weight bytes into registers with one vector load per step
    of the accumulation's `reduction` loop (Mali: vec4 memory access), where the weight keeps
    columns innermost (_packed_weight)."""
    weight = _packed_weight(sch, acc)
    if weight is None:
        return
    local = sch.cache_read(acc, weight[0], "local")
    sch.compute_at(local, reduction, preserve_unit_loops=True)
    sch.vectorize(sch.get_loops(local)[-1])


def _dlight(func, spec, target):
    """TVM's rule-based GPU schedules for the kernels without a schedule of ours (quantisation)."""
    from tvm.s_tir import dlight as dl

    tvm_target = target.tvm_target()
    with tvm_target:
        for rule in (dl.gpu.Reduction(), dl.gpu.GeneralReduction(), dl.gpu.Fallback()):
            try:
                result = rule.apply(func, tvm_target, False)
            except AssertionError:  # dlight's analyses assert on access patterns they do not model
                continue
            if result is not None:
                return result[0] if isinstance(result, list) else result
    raise ValueError(f"{spec.name}: no GPU schedule rule applies")
