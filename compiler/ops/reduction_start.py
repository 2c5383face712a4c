"""A reduction that starts from a computed value instead of zero, which te.create_prim_func does not
lower: it keeps the init's stage (a te.sum's `init` tensor is an input of the reduction) but drops
the init itself, always writing the reducer's identity (checked on the pinned apache-tvm:
`te.sum(A[i, k], axis=k, init=S[i])` becomes `with T.init(): C[v_i] = 0`).

`with_start` puts it back: the named block's init becomes a load of that stage's buffer. The read is
not added to the block's reads: decompose_reduction would copy it to the update, which tensorize
then could not match; the stage stays where create_prim_func put it, before the reduction."""

from __future__ import annotations


def with_start(func, block: str, start: str):
    """`func` with block `block`'s init set to `start[v0, v1, ...]`: `start` names a buffer the
    function allocates, indexed by the block's leading iteration variables (one per dimension), the
    last of them modulo that dimension's extent (a start repeated across a row of columns)."""
    from tvm import s_tir, tirx

    buffer = next((b for b in func.body.block.alloc_buffers if b.name == start), None)
    if buffer is None:
        raise ValueError(f"no intermediate buffer named {start!r} to start block {block!r} from")
    found = []

    def rebuild(stmt):
        if isinstance(stmt, tirx.SeqStmt):
            return tirx.SeqStmt([rebuild(s) for s in stmt.seq])
        if isinstance(stmt, tirx.For):
            return tirx.For(stmt.loop_var, stmt.min, stmt.extent, stmt.kind, rebuild(stmt.body),
                            stmt.thread_binding, stmt.annotations)
        if isinstance(stmt, s_tir.SBlockRealize):
            return s_tir.SBlockRealize(stmt.iter_values, stmt.predicate, rebuild(stmt.block))
        if not isinstance(stmt, s_tir.SBlock):
            return stmt
        if stmt.name_hint != block:
            return s_tir.SBlock(stmt.iter_vars, stmt.reads, stmt.writes, stmt.name_hint, rebuild(stmt.body),
                                stmt.init, stmt.alloc_buffers, stmt.match_buffers, stmt.annotations)
        if not isinstance(stmt.init, tirx.BufferStore):
            raise ValueError(f"block {block!r} is not a reduction with a one-store init")
        index = [v.var for v in stmt.iter_vars[:len(buffer.shape)]]
        index[-1] = tirx.floormod(index[-1], buffer.shape[-1])
        init = tirx.BufferStore(stmt.init.buffer, tirx.BufferLoad(buffer, index), stmt.init.indices)
        found.append(block)
        return s_tir.SBlock(stmt.iter_vars, stmt.reads, stmt.writes, stmt.name_hint, stmt.body, init,
                            stmt.alloc_buffers, stmt.match_buffers, stmt.annotations)

    body = rebuild(func.body)
    if not found:
        raise ValueError(f"no block named {block!r} to start from {start!r}")
    return func.with_body(body)
