"""GPU family (Vulkan: Mali, Adreno, any 1.1 device): layouts and schedules from the target's GPU facts."""

from __future__ import annotations

from typing import Any

_GEMMS = ("qgemm_w8a8", "qgemm_w4a8", "qgemm_w4a16", "qgemm_w8a16", "qkv_proj")


def buckets(spec, target) -> list[dict]:
    if spec.op in _GEMMS:
        return [{"M": 1}, {}]
    return [{}]


def layout(spec, target, bucket: dict) -> dict[str, Any]:
    gpu = target.gpu
    attention = _attention_layout(spec, gpu) if spec.op.startswith("attention") else {}
    return {
        "bucket": dict(bucket),
        # int8 GEMMs: SPV_KHR_integer_dot_product where the target says the device has it fast.
        "int8_dot": "spirv_dot4" if gpu.int8_dot else "none",
        # int8/int4 weights as [N/4, K/4, 4, 4] tiles: one thread's 4 k-values are one 32-bit word;
        # float-activation GEMMs: columns per tile, as many as a subgroup reads side by side.
        "n_tile": _float_tile(spec, gpu) if _float_weights(spec) else 4,
        "k_tile": 4,
        "act_offset": 0,
        "m_tile": 1,
        "rope_dtype": "float32",  # mobile GPUs have no float64
        **attention,
    }


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


def _gemm_n(spec) -> int:
    if spec.op == "qkv_proj":
        return (spec.dim("hq") + 2 * spec.dim("hkv")) * spec.dim("d")
    return spec.dim("n")


def _float_weights(spec) -> bool:
    return spec.op in ("qgemm_w4a16", "qgemm_w8a16") or (spec.op == "qkv_proj" and spec.opt("quant") in ("w4a16", "w8a16"))


def _float_tile(spec, gpu) -> int:
    n = _gemm_n(spec)
    return next(t for t in (gpu.subgroup_size, 16, 8, 4, 2) if n % t == 0)


def schedule(sch, spec, target, bucket: dict):
    """Schedule in place (attention is thread-bound already: compiler/ops/attention_gpu.py).

    One-token GEMMs (decode): the accumulation is a GEMV with the reduction split over threads
    (cross-thread reduction) and `gemv_cols` output columns per workgroup, both tunable; the
    small stages around it get one thread per output element. Other kernels: TVM's rule-based GPU
    schedules (dlight), sized by the target's thread limit, replayed onto `sch`."""
    if spec.op.startswith("attention"):
        return sch
    if spec.op in _GEMMS and bucket.get("M") == 1:
        schedule_gemv(sch, target.gpu)
        return sch
    scheduled = _dlight(sch.mod["main"], spec, target)
    scheduled.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch


def schedule_gemv(sch, gpu) -> None:
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    from schedules.decisions import sample_choice

    infos = normalize_prim_func(sch)
    for info in infos:
        block = info.block_rv
        kinds = info.dom_kind()
        loops = sch.get_loops(block)
        spatial = [loop for loop, kind in zip(loops, kinds) if kind == "S"] or [sch.add_unit_loop(block)]
        reduction = [loop for loop, kind in zip(loops, kinds) if kind == "R"]
        sch.reorder(*spatial, *reduction)
        fused = sch.fuse(*spatial)
        if sch.get(block).name_hint == "acc":
            # Tuning may pair more columns with more threads than a workgroup holds: such candidates
            # fail in codegen (workgroup limit) and the search moves on.
            # Default: one subgroup reduces each column (its partial sums combine in shared memory),
            # a workgroup of max_threads covers max_threads / subgroup columns.
            columns = [c for c in (1, 2, 4, 8) if c < gpu.max_threads]
            cols = sample_choice(sch, "gemv_cols", block, columns,
                                 max(c for c in columns if c * gpu.subgroup_size <= gpu.max_threads))
            threads = [t for t in (8, 16, 32, 64, 128, 256, 512) if gpu.subgroup_size <= t <= gpu.max_threads] \
                or [gpu.max_threads]
            reducers = sample_choice(sch, "gemv_threads", block, threads, threads[0])
            outer, ty = sch.split(fused, [None, cols])
            _, tx = sch.split(sch.fuse(*reduction) if len(reduction) > 1 else reduction[0], [None, reducers])
            sch.bind(outer, "blockIdx.x")
            sch.bind(ty, "threadIdx.y")
            sch.bind(tx, "threadIdx.x")
            continue
        outer, tx = sch.split(fused, [None, gpu.max_threads])
        sch.bind(outer, "blockIdx.x")
        sch.bind(tx, "threadIdx.x")
        if reduction:
            sch.decompose_reduction(block, reduction[0])


def _dlight(func, spec, target):
    from tvm.s_tir import dlight as dl

    tvm_target = target.tvm_target()
    rules = [dl.gpu.GEMV(), dl.gpu.LowBatchGEMV(), dl.gpu.Matmul(), dl.gpu.Reduction(),
             dl.gpu.GeneralReduction(), dl.gpu.Fallback()]
    if spec.op == "qkv_proj":  # dlight's Matmul on the fused RoPE epilogue fails TVM's lowering
        rules = [r for r in rules if not isinstance(r, dl.gpu.Matmul)]
    with tvm_target:
        for rule in rules:
            try:
                result = rule.apply(func, tvm_target, False)
            except AssertionError:  # dlight's analyses assert on access patterns they do not model
                continue
            if result is not None:
                return result[0] if isinstance(result, list) else result
    raise ValueError(f"{spec.name}: no GPU schedule rule applies")
