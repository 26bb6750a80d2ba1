"""Low-level LLVM intrinsics used by the packed ternary kernels.

Everything here is reachable from ``@numba.njit`` code through
:func:`numba.extending.intrinsic`:

* :func:`popcount64` -- scalar ``llvm.ctpop.i64`` (``popcnt`` / ``vpopcntq``).
* :func:`bits64` -- pack 64 consecutive int8 codes into (non-zero word, sign word,
  invalid-value word) with three byte compares and mask moves
  (``vptestmb``/``vpcmpb`` + ``kmovq`` on AVX-512 BW).
* :func:`unbits64` -- the inverse: expand one (non-zero, sign) word pair to 64 int8 codes.
* :func:`make_microkernel` -- the register-tiled popcount GEMM micro-kernel on bit
  planes, emitted directly as portable LLVM vector IR (``<8 x i64>`` = one zmm
  register; ``<2 x i64>`` for the generic fallback) so it does not depend on the
  auto-vectorisers: ``R`` broadcast rows of A times ``lanes*V`` columns of B, one word
  of K per loop iteration, accumulators in registers for the whole K loop.
* :func:`make_int8_microkernel` -- the x86 int8 multiply-add micro-kernel on ternary
  codes (``vpmaddubsw`` on AVX2 / AVX-512BW, ``vpdpbusd`` with VNNI), for targets
  without a vector popcount; :func:`expand_plus1` writes its B operand from bit planes.
* :func:`make_lut_microkernel` -- the x86 table-lookup micro-kernel on pairs of codes
  (``vpshufb`` in the 16-byte table of each weight pair, ``vpaddb``), for targets without
  VNNI; :func:`expand_pairs8` writes its B operand from bit planes.
* :func:`make_float_microkernel` -- the float32 FMA micro-kernel of the stem.

Bit identity (docs/design.md §2.5), with ``t = m_a & m_b`` and
``u = (s_a ^ s_b) & t``::

    a . b = popcount(t) - 2 * popcount(u)

Per word and per 8 output columns the micro-kernel issues ``vpandq`` (t),
``vpternlogq`` (u), two ``vpopcntq`` and two ``vpaddq``: 6 vector instructions per
512 multiply-accumulates.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_I8 = ir.IntType(8)
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_V8I64 = ir.VectorType(_I64, 8)
_V8I32 = ir.VectorType(_I32, 8)
_V64I8 = ir.VectorType(_I8, 64)
_V64I1 = ir.VectorType(ir.IntType(1), 64)


def _as_intp(context, builder, val, ty):
    return context.cast(builder, val, ty, types.intp)


def _data_ptr(context, builder, arrty, val, elem):
    """Typed pointer to the first element of a numba array value."""
    data = context.make_array(arrty)(context, builder, val).data
    return builder.bitcast(data, elem.as_pointer())


def _check_array(arr, dtype):
    return (
        isinstance(arr, types.Array)
        and arr.dtype == dtype
        and arr.layout == "C"
    )


@intrinsic
def popcount64(typingctx, x):
    """Number of set bits of a 64-bit integer (``llvm.ctpop.i64``), as uint64."""
    if not isinstance(x, types.Integer):
        return None
    sig = types.uint64(x)

    def codegen(context, builder, signature, args):
        val = context.cast(builder, args[0], signature.args[0], types.uint64)
        fn = builder.module.declare_intrinsic("llvm.ctpop", [_I64])
        return builder.call(fn, [val])

    return sig, codegen


@intrinsic
def order_key32(typingctx, x):
    """An int32 that orders like ``x`` (float32 or int32): for a float32, its bits with the
    magnitude bits of negatives flipped (``b ^ ((b >> 31) & 0x7fffffff)``, -0.0 just below
    +0.0); an int32 is its own key.  Integer min/max vectorise where float ones do not."""
    if x == types.float32:
        def codegen(context, builder, signature, args):
            b = builder.bitcast(args[0], _I32)
            flip = builder.and_(builder.ashr(b, _I32(31)), _I32(0x7FFFFFFF))
            return builder.xor(b, flip)
    elif x == types.int32:
        def codegen(context, builder, signature, args):
            return args[0]
    else:
        return None
    return types.int32(x), codegen


@intrinsic
def key32_value(typingctx, key, like):
    """The inverse of :func:`order_key32`: the float32 or int32 (the type of ``like``)
    whose key is ``key``."""
    if like == types.float32:
        def codegen(context, builder, signature, args):
            b = args[0]
            flip = builder.and_(builder.ashr(b, _I32(31)), _I32(0x7FFFFFFF))
            return builder.bitcast(builder.xor(b, flip), ir.FloatType())
    elif like == types.int32:
        def codegen(context, builder, signature, args):
            return args[0]
    else:
        return None
    return like(types.int32, like), codegen


@intrinsic
def bits64(typingctx, codes, offset):
    """``(m, s, bad)`` words of ``codes.ravel()[offset:offset + 64]`` (int8, C-contiguous).

    bit j of ``m`` is ``code != 0``, of ``s`` is ``code < 0`` and of ``bad`` is
    ``code not in {-1, 0, 1}``.  The caller guarantees 64 readable elements.
    """
    if not (_check_array(codes, types.int8) and isinstance(offset, types.Integer)):
        return None
    rett = types.UniTuple(types.uint64, 3)
    sig = rett(codes, offset)

    def codegen(context, builder, signature, args):
        base = _data_ptr(context, builder, signature.args[0], args[0], _I8)
        off = _as_intp(context, builder, args[1], signature.args[1])
        vptr = builder.bitcast(builder.gep(base, [off]), _V64I8.as_pointer())
        v = builder.load(vptr, align=1)
        zero = ir.Constant(_V64I8, None)
        m = builder.bitcast(builder.icmp_signed("!=", v, zero), _I64)
        s = builder.bitcast(builder.icmp_signed("<", v, zero), _I64)
        shifted = builder.add(v, ir.Constant(_V64I8, [1] * 64))
        bad = builder.icmp_unsigned(">", shifted, ir.Constant(_V64I8, [2] * 64))
        bad = builder.bitcast(bad, _I64)
        return context.make_tuple(builder, signature.return_type, [m, s, bad])

    return sig, codegen


@intrinsic
def unbits64(typingctx, out, offset, m, s):
    """Write the 64 codes of one (non-zero, sign) word pair to ``out.ravel()[offset:]``."""
    if not (
        _check_array(out, types.int8)
        and isinstance(offset, types.Integer)
        and isinstance(m, types.Integer)
        and isinstance(s, types.Integer)
    ):
        return None
    sig = types.void(out, offset, m, s)

    def codegen(context, builder, signature, args):
        base = _data_ptr(context, builder, signature.args[0], args[0], _I8)
        off = _as_intp(context, builder, args[1], signature.args[1])
        mw = context.cast(builder, args[2], signature.args[2], types.uint64)
        sw = context.cast(builder, args[3], signature.args[3], types.uint64)
        mm = builder.bitcast(mw, _V64I1)
        sm = builder.bitcast(sw, _V64I1)
        one = ir.Constant(_V64I8, [1] * 64)
        neg = ir.Constant(_V64I8, [-1 & 0xFF] * 64)
        zero = ir.Constant(_V64I8, None)
        val = builder.select(sm, neg, builder.select(mm, one, zero))
        vptr = builder.bitcast(builder.gep(base, [off]), _V64I8.as_pointer())
        builder.store(val, vptr, align=1)
        return context.get_dummy_value()

    return sig, codegen


def _trap(context, builder):
    """Code for a kernel the compile target cannot run well: a trap (never selected)."""
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []), "llvm.trap")
    builder.call(fn, [])
    return context.get_dummy_value()


def make_microkernel(rows: int, vecs: int, b_cols: int | None = None, lanes: int = 8, available: bool = True):
    """Build the ``rows x (lanes*vecs)`` packed ternary GEMM micro-kernel intrinsic
    (popcount on bit planes, ``<lanes x i64>`` vectors: 8 = one zmm, 2 = one xmm / NEON
    register; portable LLVM IR, compiled for any target).

    Signature (inside njit code)::

        mk(a, a_off, b, b_off, nwords, out, out_off, ldo)

    * ``a``: uint64 C-contiguous array; the A tile starts at flat index ``a_off`` and
      holds, for each word ``w`` of K, ``rows`` non-zero words then ``rows`` sign words
      (``a[a_off + w*2*rows + plane*rows + r]``).
    * ``b``: uint64 C-contiguous array; the B tile starts at ``b_off`` and holds, for
      each word, ``NB = b_cols`` (default ``lanes*vecs``) non-zero words then ``NB`` sign
      words (``b[b_off + w*2*NB + plane*NB + j]``); the kernel reads the first
      ``lanes*vecs`` columns (``b_cols > lanes*vecs`` gives a narrower tail kernel over
      the same layout).
    * ``nwords >= 1`` words of K are accumulated.
    * Result ``C[r, j]`` (int32) is stored at ``out.ravel()[out_off + r*ldo + j]`` for
      all ``rows x lanes*vecs`` entries: the caller routes edge tiles through a scratch
      tile.

    ``available=False`` compiles the kernel to a trap (it must then never be selected):
    for wide kernels on narrow targets, where LLVM would split every vector and spill.
    """
    width = lanes * vecs
    nb = width if b_cols is None else int(b_cols)
    if nb < width:
        raise ValueError("b_cols must be >= lanes * vecs")
    vi64 = ir.VectorType(_I64, lanes)
    vi32 = ir.VectorType(_I32, lanes)

    @intrinsic
    def microkernel(typingctx, a, a_off, b, b_off, nwords, out, out_off, ldo):
        if not (
            _check_array(a, types.uint64)
            and _check_array(b, types.uint64)
            and _check_array(out, types.int32)
        ):
            return None
        sig = types.void(a, a_off, b, b_off, nwords, out, out_off, ldo)

        def codegen(context, builder, signature, args):
            if not available:
                return _trap(context, builder)
            sa = signature.args
            aptr = _data_ptr(context, builder, sa[0], args[0], _I64)
            bptr = _data_ptr(context, builder, sa[2], args[2], _I64)
            optr = _data_ptr(context, builder, sa[5], args[5], _I32)
            a_off_v = _as_intp(context, builder, args[1], sa[1])
            b_off_v = _as_intp(context, builder, args[3], sa[3])
            nw = _as_intp(context, builder, args[4], sa[4])
            o_off = _as_intp(context, builder, args[6], sa[6])
            ldo_v = _as_intp(context, builder, args[7], sa[7])

            ctpop = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vi64, [vi64]), f"llvm.ctpop.v{lanes}i64"
            )
            zero = ir.Constant(vi64, None)
            undef = ir.Constant(vi64, ir.Undefined)
            splat0 = ir.Constant(vi32, [0] * lanes)

            pre = builder.block
            loop = builder.append_basic_block("ternary_mk.loop")
            done = builder.append_basic_block("ternary_mk.done")
            builder.branch(loop)
            builder.position_at_end(loop)

            w = builder.phi(_I64, "w")
            w.add_incoming(ir.Constant(_I64, 0), pre)
            acc_p = [[builder.phi(vi64) for _ in range(vecs)] for _ in range(rows)]
            acc_q = [[builder.phi(vi64) for _ in range(vecs)] for _ in range(rows)]
            for r in range(rows):
                for v in range(vecs):
                    acc_p[r][v].add_incoming(zero, pre)
                    acc_q[r][v].add_incoming(zero, pre)

            bbase = builder.add(b_off_v, builder.mul(w, ir.Constant(_I64, 2 * nb)))
            abase = builder.add(a_off_v, builder.mul(w, ir.Constant(_I64, 2 * rows)))

            def vload(k):
                p = builder.gep(bptr, [builder.add(bbase, ir.Constant(_I64, k))])
                return builder.load(builder.bitcast(p, vi64.as_pointer()), align=8)

            def bcast(k):
                p = builder.gep(aptr, [builder.add(abase, ir.Constant(_I64, k))])
                x = builder.insert_element(undef, builder.load(p, align=8), ir.Constant(_I32, 0))
                return builder.shuffle_vector(x, undef, splat0)

            bm = [vload(lanes * v) for v in range(vecs)]
            bs = [vload(nb + lanes * v) for v in range(vecs)]
            new_p = [[None] * vecs for _ in range(rows)]
            new_q = [[None] * vecs for _ in range(rows)]
            for r in range(rows):
                am = bcast(r)
                asg = bcast(rows + r)
                for v in range(vecs):
                    t = builder.and_(am, bm[v])
                    u = builder.and_(builder.xor(asg, bs[v]), t)
                    new_p[r][v] = builder.add(acc_p[r][v], builder.call(ctpop, [t]))
                    new_q[r][v] = builder.add(acc_q[r][v], builder.call(ctpop, [u]))

            w_next = builder.add(w, ir.Constant(_I64, 1))
            tail = builder.block
            w.add_incoming(w_next, tail)
            for r in range(rows):
                for v in range(vecs):
                    acc_p[r][v].add_incoming(new_p[r][v], tail)
                    acc_q[r][v].add_incoming(new_q[r][v], tail)
            builder.cbranch(builder.icmp_signed("<", w_next, nw), loop, done)

            builder.position_at_end(done)
            one = ir.Constant(vi64, [1] * lanes)
            for r in range(rows):
                row_off = builder.add(o_off, builder.mul(ir.Constant(_I64, r), ldo_v))
                for v in range(vecs):
                    res = builder.sub(new_p[r][v], builder.shl(new_q[r][v], one))
                    res = builder.trunc(res, vi32)
                    p = builder.gep(optr, [builder.add(row_off, ir.Constant(_I64, lanes * v))])
                    builder.store(res, builder.bitcast(p, vi32.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    microkernel.__name__ = f"ternary_microkernel_{rows}x{width}"
    return microkernel


def _tile_loop(builder, label, accty, rows, vecs, nsteps, step, may_be_empty=False):
    """Emit a loop of ``nsteps`` steps over a ``rows x vecs`` tile of accumulators of
    type ``accty``, zero at the start: ``step(q, acc)`` emits step ``q`` and returns the
    new accumulators.  ``nsteps >= 1`` unless ``may_be_empty`` (then 0 steps give the
    zero tile).  Leaves the builder after the loop and returns the final tile."""
    pre = builder.block
    loop = builder.append_basic_block(f"{label}.loop")
    done = builder.append_basic_block(f"{label}.done")
    if may_be_empty:
        builder.cbranch(builder.icmp_signed(">", nsteps, ir.Constant(_I64, 0)), loop, done)
    else:
        builder.branch(loop)
    builder.position_at_end(loop)
    q = builder.phi(_I64, "q")
    q.add_incoming(ir.Constant(_I64, 0), pre)
    acc = [[builder.phi(accty) for _ in range(vecs)] for _ in range(rows)]
    for row in acc:
        for a in row:
            a.add_incoming(ir.Constant(accty, None), pre)
    new = step(q, acc)
    q_next = builder.add(q, ir.Constant(_I64, 1))
    tail = builder.block
    q.add_incoming(q_next, tail)
    for r in range(rows):
        for v in range(vecs):
            acc[r][v].add_incoming(new[r][v], tail)
    builder.cbranch(builder.icmp_signed("<", q_next, nsteps), loop, done)
    builder.position_at_end(done)
    if not may_be_empty:
        return new
    final = [[builder.phi(accty) for _ in range(vecs)] for _ in range(rows)]
    for r in range(rows):
        for v in range(vecs):
            final[r][v].add_incoming(ir.Constant(accty, None), pre)
            final[r][v].add_incoming(new[r][v], tail)
    return final


#: the x86 instruction of each int8 micro-kernel operation and vector width, and the
#: LLVM features it needs (see :func:`make_int8_microkernel`)
INT8_OPS = {
    ("maddubs", 32): ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd", ("avx2",)),
    ("maddubs", 64): ("llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512", ("avx512bw",)),
    ("vnni", 32): ("llvm.x86.avx512.vpdpbusd.256", None, ("avxvnni",)),
    ("vnni", 64): ("llvm.x86.avx512.vpdpbusd.512", None, ("avx512vnni",)),
}


def make_int8_microkernel(rows: int, vecs: int, vector_bytes: int, op: str, available: bool = True):
    """Build the ``rows x (vecs*vector_bytes/4)`` int8 multiply-add micro-kernel on ternary
    codes (x86: ``op = "maddubs"``: ``vpmaddubsw`` + ``vpaddw`` into int16 lanes;
    ``"vnni"``: ``vpdpbusd`` into int32 lanes; ``vector_bytes`` 32 = ymm, 64 = zmm).

    Operands are groups of 4 consecutive K values ("quads"), one int32 per quad:

    * ``a`` (int32 view of int8 weight codes ``w ∈ {-1, 0, 1}``): the A tile starts at
      ``a_off`` and holds, for each quad ``q``, the ``rows`` rows' quads
      (``a[a_off + q*rows + r]``), broadcast to every lane;
    * ``b`` (int32 view of the bytes ``x + 1 ∈ {0, 1, 2}`` of the activation codes): the
      B tile holds, for each quad, ``NB = vecs*vector_bytes/4`` columns' quads
      (``b[b_off + q*NB + j]``), one column per int32 lane;
    * ``nquads >= 1`` quads are accumulated; for ``maddubs`` at most 8191 (each int16
      lane gains at most 2·2 per quad in magnitude, so 8191 quads stay below 2¹⁵).

    Exactness: ``Σ_k (x_k + 1)·w_k = Σ_k x_k·w_k + Σ_k w_k``, so the result is the sum
    minus the row's weight sum ``corr[corr_off + r]`` (computed at prepack).  With
    ``accumulate`` true the kernel adds its sum to ``out`` instead (a later K chunk) and
    does not subtract.  The int16 lanes of ``maddubs`` hold two partial sums per column,
    which ``vpmaddwd`` against ones adds into the column's int32 lane at the end.

    ``available=False`` (the compile target lacks the instruction's features) compiles
    the kernel to a trap: it must then never be selected.
    """
    lanes = vector_bytes // 4
    width = lanes * vecs
    name, widen_name, _ = INT8_OPS[(op, vector_bytes)]
    v32 = ir.VectorType(_I32, lanes)
    v8 = ir.VectorType(_I8, vector_bytes)
    v16 = ir.VectorType(ir.IntType(16), vector_bytes // 2)

    @intrinsic
    def microkernel(typingctx, a, a_off, b, b_off, nquads, out, out_off, ldo, corr, corr_off, accumulate):
        if not (_check_array(a, types.int32) and _check_array(b, types.int32)
                and _check_array(out, types.int32) and _check_array(corr, types.int32)):
            return None
        sig = types.void(a, a_off, b, b_off, nquads, out, out_off, ldo, corr, corr_off, accumulate)

        def codegen(context, builder, signature, args):
            if not available:
                return _trap(context, builder)
            sa = signature.args
            aptr = _data_ptr(context, builder, sa[0], args[0], _I32)
            bptr = _data_ptr(context, builder, sa[2], args[2], _I32)
            optr = _data_ptr(context, builder, sa[5], args[5], _I32)
            cptr = _data_ptr(context, builder, sa[8], args[8], _I32)
            a_off_v, b_off_v, nq, o_off, ldo_v, c_off = (
                _as_intp(context, builder, args[i], sa[i]) for i in (1, 3, 4, 6, 7, 9))
            acc_in = context.cast(builder, args[10], sa[10], types.boolean)
            mod = builder.module
            if op == "vnni":
                dot = cgutils.get_or_insert_function(mod, ir.FunctionType(v32, [v32, v32, v32]), name)
                accty = v32
            else:
                dot = cgutils.get_or_insert_function(mod, ir.FunctionType(v16, [v8, v8]), name)
                widen = cgutils.get_or_insert_function(mod, ir.FunctionType(v32, [v16, v16]), widen_name)
                accty = v16
            undef = ir.Constant(v32, ir.Undefined)
            splat0 = ir.Constant(v32, [0] * lanes)

            def step(q, acc):
                bbase = builder.add(b_off_v, builder.mul(q, ir.Constant(_I64, width)))
                abase = builder.add(a_off_v, builder.mul(q, ir.Constant(_I64, rows)))
                bv = []
                for v in range(vecs):
                    p = builder.gep(bptr, [builder.add(bbase, ir.Constant(_I64, lanes * v))])
                    bv.append(builder.load(builder.bitcast(p, v32.as_pointer()), align=4))
                new = [[None] * vecs for _ in range(rows)]
                for r in range(rows):
                    p = builder.gep(aptr, [builder.add(abase, ir.Constant(_I64, r))])
                    x = builder.insert_element(undef, builder.load(p, align=4), ir.Constant(_I32, 0))
                    av = builder.shuffle_vector(x, undef, splat0)
                    for v in range(vecs):
                        if op == "vnni":
                            new[r][v] = builder.call(dot, [acc[r][v], bv[v], av])
                        else:
                            prod = builder.call(dot, [builder.bitcast(bv[v], v8), builder.bitcast(av, v8)])
                            new[r][v] = builder.add(acc[r][v], prod)
                return new

            new = _tile_loop(builder, "int8_mk", accty, rows, vecs, nq, step)
            ones = ir.Constant(v16, [1] * (vector_bytes // 2))
            for r in range(rows):
                row_off = builder.add(o_off, builder.mul(ir.Constant(_I64, r), ldo_v))
                cval = builder.load(builder.gep(cptr, [builder.add(c_off, ir.Constant(_I64, r))]), align=4)
                cvec = builder.shuffle_vector(builder.insert_element(undef, cval, ir.Constant(_I32, 0)),
                                              undef, splat0)
                for v in range(vecs):
                    res = new[r][v] if op == "vnni" else builder.call(widen, [new[r][v], ones])
                    p = builder.bitcast(builder.gep(optr, [builder.add(row_off, ir.Constant(_I64, lanes * v))]),
                                        v32.as_pointer())
                    old = builder.load(p, align=4)  # read only when accumulating
                    base = builder.select(acc_in, old, builder.sub(ir.Constant(v32, None), cvec))
                    builder.store(builder.add(res, base), p, align=4)
            return context.get_dummy_value()

        return sig, codegen

    microkernel.__name__ = f"int8_{op}_microkernel_{rows}x{width}"
    return microkernel



#: the x86 byte shuffle of each LUT micro-kernel vector width and the LLVM features it
#: needs (see :func:`make_lut_microkernel`)
LUT_OPS = {
    32: ("llvm.x86.avx2.pshuf.b", ("avx2",)),
    64: ("llvm.x86.avx512.pshuf.b.512", ("avx512bw",)),
}
#: K pairs per byte stage of the LUT micro-kernel: each pair adds at most 2 to a byte
#: lane, so 63 pairs stay within int8
LUT_CHUNK = 63
#: K pairs per LUT micro-kernel call: the byte stages are added into int16 lanes, 256
#: stages of at most 126 each stay within int16
LUT_DEPTH = LUT_CHUNK * 256


def lut_weight_index(w0, w1):
    """The table of the weight pair ``(w0, w1)`` (codes in {-1, 0, 1}): ``(w0+1) + 3(w1+1)``
    in 0..8 (4 = the pair (0, 0), whose table is all zeros)."""
    return (w0 + 1) + 3 * (w1 + 1)


def lut_weight_byte(w0, w1, vector_bytes: int):
    """What the A operand of the ``vector_bytes`` LUT micro-kernel stores for the weight
    pair: its table number times ``vector_bytes / 8``, the table's offset in 8-byte units
    (so the load's address is ``tables + 8·byte``, one addressing mode, no shift)."""
    return lut_weight_index(w0, w1) * (vector_bytes // 8)


def lut_nibble(x0, x1):
    """The 4-bit index of the activation pair ``(x0, x1)``: ``(x0+1) + 4(x1+1)`` (5 = the
    pair (0, 0), the padding value)."""
    return (x0 + 1) + 4 * (x1 + 1)


def lut_tables() -> list[list[int]]:
    """The 9 tables of 16 int8 entries: ``table[lut_weight_index(w0, w1)][lut_nibble(x0, x1)]
    = w0·x0 + w1·x1`` (entries of nibbles that are no pair are 0)."""
    tables = [[0] * 16 for _ in range(9)]
    for w0 in (-1, 0, 1):
        for w1 in (-1, 0, 1):
            for x0 in (-1, 0, 1):
                for x1 in (-1, 0, 1):
                    tables[lut_weight_index(w0, w1)][lut_nibble(x0, x1)] = w0 * x0 + w1 * x1
    return tables


def _lut_table_global(module, vector_bytes):
    """The 9 tables, each repeated to ``vector_bytes`` bytes (one per 128-bit lane), as a
    constant global of ``module``: ``[9 x <vector_bytes x i8>]``."""
    name = f"sttn_sim.lut_tables.{vector_bytes}"
    if name in module.globals:
        return module.globals[name]
    vty = ir.VectorType(_I8, vector_bytes)
    arr = ir.ArrayType(vty, 9)
    gv = ir.GlobalVariable(module, arr, name)
    gv.linkage = "internal"
    gv.global_constant = True
    gv.align = vector_bytes
    gv.initializer = ir.Constant(arr, [ir.Constant(vty, [t[i % 16] for i in range(vector_bytes)]) for t in lut_tables()])
    return gv


def make_lut_microkernel(rows: int, vecs: int, vector_bytes: int, available: bool = True):
    """Build the ``rows x (vecs*vector_bytes)`` table-lookup micro-kernel on pairs of
    ternary codes (x86 ``vpshufb``; ``vector_bytes`` 32 = ymm, 64 = zmm).

    Two codes of K form a pair.  A weight pair (w0, w1) has 9 values, so the products
    ``w0·x0 + w1·x1`` of all 9 activation pairs fit one 16-byte table
    (:func:`lut_tables`); one ``vpshufb`` looks up ``vector_bytes`` columns' activation
    pairs (their nibbles, :func:`lut_nibble`) in the table of one row's weight pair and
    one ``vpaddb`` adds them: 2·vector_bytes multiply-adds in two instructions, no
    offset correction (the tables hold the exact products).  Operands are bytes, passed
    as int32 views, offsets counted in bytes:

    * ``a``: for each pair ``q``, the ``rows`` rows' table offsets
      (:func:`lut_weight_byte`) at ``a_off + q*rows + r``;
    * ``b``: for each pair, ``NB = vecs*vector_bytes`` columns' nibbles at
      ``b_off + q*NB + j``;
    * ``npairs`` in 1..:data:`LUT_DEPTH` (the caller chunks K).

    The ``vpaddb`` sums stay in byte registers for :data:`LUT_CHUNK` pairs, then are
    sign-extended and added into int16 lanes of a stack tile (one ``vpmovsxbw`` pair,
    load, add and store per register: half the work of widening each stage to int32);
    at the end the int16 tile goes to ``out[out_off + r*ldo + j]`` (int32), added to it
    when ``accumulate``.  ``corr``/``corr_off`` are unused (the
    signature of :func:`make_int8_microkernel`, so one dispatch serves both).
    """
    width = vecs * vector_bytes
    name, _ = LUT_OPS[vector_bytes]
    v8 = ir.VectorType(_I8, vector_bytes)
    v16 = ir.VectorType(ir.IntType(16), vector_bytes)

    @intrinsic
    def microkernel(typingctx, a, a_off, b, b_off, npairs, out, out_off, ldo, corr, corr_off, accumulate):
        if not (_check_array(a, types.int32) and _check_array(b, types.int32) and _check_array(out, types.int32)):
            return None
        sig = types.void(a, a_off, b, b_off, npairs, out, out_off, ldo, corr, corr_off, accumulate)

        def codegen(context, builder, signature, args):
            if not available:
                return _trap(context, builder)
            sa = signature.args
            aptr = _data_ptr(context, builder, sa[0], args[0], _I8)
            bptr = _data_ptr(context, builder, sa[2], args[2], _I8)
            optr = _data_ptr(context, builder, sa[5], args[5], _I32)
            a_off_v, b_off_v, npr, o_off, ldo_v = (_as_intp(context, builder, args[i], sa[i]) for i in (1, 3, 4, 6, 7))
            acc_in = context.cast(builder, args[10], sa[10], types.boolean)
            shuffle = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v8, [v8, v8]), name)
            tables = builder.bitcast(_lut_table_global(builder.module, vector_bytes), _I64.as_pointer())

            def step(q, acc):
                bbase = builder.add(b_off_v, builder.mul(q, ir.Constant(_I64, width)))
                abase = builder.add(a_off_v, builder.mul(q, ir.Constant(_I64, rows)))
                bv = [builder.load(_vector_at(builder, bptr, builder.add(bbase, ir.Constant(_I64, vector_bytes * v)),
                                              v8), align=1) for v in range(vecs)]
                new = [[None] * vecs for _ in range(rows)]
                for r in range(rows):
                    idx = builder.zext(builder.load(builder.gep(aptr, [builder.add(abase, ir.Constant(_I64, r))])),
                                       _I64)
                    table = builder.load(builder.bitcast(builder.gep(tables, [idx]), v8.as_pointer()),
                                         align=vector_bytes)
                    for v in range(vecs):
                        new[r][v] = builder.add(acc[r][v], builder.call(shuffle, [table, bv[v]]))
                return new

            # int16 stage: the tile in rows*vecs <vector_bytes x i16> slots on the stack
            mid = cgutils.alloca_once(builder, v16, size=ir.Constant(_I64, rows * vecs))
            for slot in range(rows * vecs):
                builder.store(ir.Constant(v16, None), builder.gep(mid, [ir.Constant(_I64, slot)]))
            chunk = ir.Constant(_I64, LUT_CHUNK)
            nchunks = builder.sdiv(builder.add(npr, ir.Constant(_I64, LUT_CHUNK - 1)), chunk)
            with cgutils.for_range(builder, nchunks) as chunk_loop:
                first = builder.mul(chunk_loop.index, chunk)
                left = builder.sub(npr, first)
                n = builder.select(builder.icmp_signed("<", left, chunk), left, chunk)
                new = _tile_loop(builder, "lut_mk", v8, rows, vecs, n, lambda q, acc: step(builder.add(first, q), acc))
                for r in range(rows):
                    for v in range(vecs):
                        p = builder.gep(mid, [ir.Constant(_I64, r * vecs + v)])
                        builder.store(builder.add(builder.load(p), builder.sext(new[r][v], v16)), p)
            undef = ir.Constant(v16, ir.Undefined)
            for r in range(rows):
                row_off = builder.add(o_off, builder.mul(ir.Constant(_I64, r), ldo_v))
                for v in range(vecs):
                    total = builder.load(builder.gep(mid, [ir.Constant(_I64, r * vecs + v)]))
                    for part in range(vector_bytes // 8):
                        eight = builder.shuffle_vector(total, undef,
                                                       ir.Constant(_V8I32, list(range(8 * part, 8 * part + 8))))
                        wide = builder.sext(eight, _V8I32)
                        p = _vector_at(builder, optr, builder.add(row_off, ir.Constant(_I64, vector_bytes * v + 8 * part)),
                                       _V8I32)
                        old = builder.load(p, align=4)  # read only when accumulating
                        builder.store(builder.add(wide, builder.select(acc_in, old, ir.Constant(_V8I32, None))), p,
                                      align=4)
            return context.get_dummy_value()

        return sig, codegen

    microkernel.__name__ = f"lut_microkernel_{rows}x{width}"
    return microkernel


def _plus1_bytes(builder, m, s):
    """The 64 codes of an (i64 non-zero, i64 sign) word pair as bytes ``x + 1 ∈ {0, 1, 2}``."""
    mm = builder.bitcast(m, _V64I1)
    sm = builder.bitcast(s, _V64I1)
    return builder.select(mm, builder.select(sm, ir.Constant(_V64I8, None), ir.Constant(_V64I8, [2] * 64)),
                          ir.Constant(_V64I8, [1] * 64))


def _interleave(builder, a, b, n):
    """The elements of the ``n``-element vectors ``a`` and ``b`` alternately: a0 b0 a1 b1 ..."""
    mask = [i // 2 + (i % 2) * n for i in range(2 * n)]
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, 2 * n), mask))


@intrinsic
def expand_pairs8(typingctx, buf, offset, stride, words, src, j0, add, plane_off):
    """Write the 64 codes of 8 columns' (non-zero, sign) word pairs as pair nibbles
    (:func:`lut_nibble` of codes ``2i, 2i+1``), the B layout of
    :func:`make_lut_microkernel`: column ``t`` (``t < 8``) is ``j0 + t``, its words are
    ``words[src[j0+t] + add]`` and ``words[plane_off + src[j0+t] + add]``, and pair ``i``
    of the 8 columns goes to the 8 bytes at ``offset + i*stride`` of ``buf`` (int32
    view, offsets in bytes).  A byte transpose in three interleave steps, then 32
    eight-byte stores (one column at a time would take 256 byte stores)."""
    if not (_check_array(buf, types.int32) and _check_array(words, types.uint64) and _check_array(src, types.int64)
            and all(isinstance(v, types.Integer) for v in (offset, stride, j0, add, plane_off))):
        return None
    sig = types.void(buf, offset, stride, words, src, j0, add, plane_off)

    def codegen(context, builder, signature, args):
        sa = signature.args
        base = _data_ptr(context, builder, sa[0], args[0], _I8)
        wptr = _data_ptr(context, builder, sa[3], args[3], _I64)
        sptr = _data_ptr(context, builder, sa[4], args[4], _I64)
        off, step, first, extra, plane = (_as_intp(context, builder, args[i], sa[i]) for i in (1, 2, 5, 6, 7))
        v32 = ir.VectorType(_I8, 32)
        undef = ir.Constant(_V64I8, ir.Undefined)
        even_mask = ir.Constant(ir.VectorType(_I32, 32), list(range(0, 64, 2)))
        odd_mask = ir.Constant(ir.VectorType(_I32, 32), list(range(1, 64, 2)))
        nibbles = []
        for t in range(8):
            at = builder.add(builder.load(builder.gep(sptr, [builder.add(first, ir.Constant(_I64, t))])), extra)
            val = _plus1_bytes(builder, builder.load(builder.gep(wptr, [at])),
                               builder.load(builder.gep(wptr, [builder.add(at, plane)])))
            even = builder.shuffle_vector(val, undef, even_mask)
            odd = builder.shuffle_vector(val, undef, odd_mask)
            nibbles.append(builder.add(even, builder.shl(odd, ir.Constant(v32, [2] * 32))))
        # [t][i] -> [i][t]: interleave bytes, then byte pairs, then quads
        two = [_interleave(builder, nibbles[2 * k], nibbles[2 * k + 1], 32) for k in range(4)]
        i16 = ir.VectorType(ir.IntType(16), 32)
        four = [_interleave(builder, builder.bitcast(two[2 * k], i16), builder.bitcast(two[2 * k + 1], i16), 32)
                for k in range(2)]
        i32v = ir.VectorType(_I32, 32)
        eight = _interleave(builder, builder.bitcast(four[0], i32v), builder.bitcast(four[1], i32v), 32)
        groups = builder.bitcast(eight, ir.VectorType(_I64, 32))
        for i in range(32):
            p = builder.gep(base, [builder.add(off, builder.mul(step, ir.Constant(_I64, i)))])
            builder.store(builder.extract_element(groups, ir.Constant(_I32, i)), builder.bitcast(p, _I64.as_pointer()),
                          align=1)
        return context.get_dummy_value()

    return sig, codegen

@intrinsic
def expand_plus1(typingctx, buf, offset, stride, m, s):
    """Write the 64 codes of one (non-zero, sign) word pair as bytes ``x + 1 ∈ {0, 1, 2}``
    to ``buf`` (int32 view): the quad ``i`` (codes ``4i .. 4i+3``) goes to
    ``buf[offset + i*stride]`` -- the B layout of :func:`make_int8_microkernel`."""
    if not (_check_array(buf, types.int32) and isinstance(offset, types.Integer)
            and isinstance(stride, types.Integer) and isinstance(m, types.Integer)
            and isinstance(s, types.Integer)):
        return None
    sig = types.void(buf, offset, stride, m, s)

    def codegen(context, builder, signature, args):
        sa = signature.args
        base = _data_ptr(context, builder, sa[0], args[0], _I32)
        off = _as_intp(context, builder, args[1], sa[1])
        step = _as_intp(context, builder, args[2], sa[2])
        val = _plus1_bytes(builder, context.cast(builder, args[3], sa[3], types.uint64),
                           context.cast(builder, args[4], sa[4], types.uint64))
        quads = builder.bitcast(val, ir.VectorType(_I32, 16))
        for i in range(16):
            p = builder.gep(base, [builder.add(off, builder.mul(step, ir.Constant(_I64, i)))])
            builder.store(builder.extract_element(quads, ir.Constant(_I32, i)), p, align=4)
        return context.get_dummy_value()

    return sig, codegen


_F32 = ir.FloatType()


def make_float_microkernel(vecs: int, chans: int, lanes: int = 16, available: bool = True):
    """Build the ``(lanes*vecs) pixels x chans channels`` float32 FMA micro-kernel
    intrinsic of the stem convolution: the vector lanes run over consecutive output
    pixels of one row, one ``<lanes x float>`` accumulator per (channel, pixel vector)
    (16 = zmm, 8 = ymm, 4 = xmm / NEON) for the whole tap loop.

    Signature (inside njit code)::

        fmk(x, x_off, taps, w, w_off, w_ld, ntap, out, out_off, out_ld)

    computes, for ``j < chans`` and ``i < lanes*vecs``::

        out[out_off + j*out_ld + i] = Σ_{t < ntap} x[x_off + taps[t] + i] · w[w_off + t*w_ld + j]

    (flat float32 C-contiguous arrays, ``taps`` int64).  Per tap: ``vecs`` contiguous
    vector loads of the input, ``chans`` broadcasts of a weight, ``vecs·chans``
    multiply-adds (``llvm.fmuladd``: one fused ``vfmadd`` where the target has FMA, a
    multiply and an add elsewhere), summed in tap order.  ``available=False`` compiles it
    to a trap (as :func:`make_microkernel`).
    """
    vf32 = ir.VectorType(_F32, lanes)

    @intrinsic
    def float_microkernel(typingctx, x, x_off, taps, w, w_off, w_ld, ntap, out, out_off, out_ld):
        if not (_check_array(x, types.float32) and _check_array(taps, types.int64)
                and _check_array(w, types.float32) and _check_array(out, types.float32)):
            return None
        sig = types.void(x, x_off, taps, w, w_off, w_ld, ntap, out, out_off, out_ld)

        def codegen(context, builder, signature, args):
            if not available:
                return _trap(context, builder)
            sa = signature.args
            xptr = _data_ptr(context, builder, sa[0], args[0], _F32)
            tptr = _data_ptr(context, builder, sa[2], args[2], _I64)
            wptr = _data_ptr(context, builder, sa[3], args[3], _F32)
            optr = _data_ptr(context, builder, sa[7], args[7], _F32)
            x_off_v = _as_intp(context, builder, args[1], sa[1])
            w_off_v, w_ld_v = (_as_intp(context, builder, args[i], sa[i]) for i in (4, 5))
            n = _as_intp(context, builder, args[6], sa[6])
            o_off, o_ld = (_as_intp(context, builder, args[i], sa[i]) for i in (8, 9))
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vf32, [vf32] * 3), f"llvm.fmuladd.v{lanes}f32")

            def step(t, acc):
                xbase = builder.add(x_off_v, builder.load(builder.gep(tptr, [t]), align=8))
                xv = []
                for r in range(vecs):
                    p = builder.gep(xptr, [builder.add(xbase, ir.Constant(_I64, lanes * r))])
                    xv.append(builder.load(builder.bitcast(p, vf32.as_pointer()), align=4))
                wbase = builder.add(w_off_v, builder.mul(t, w_ld_v))
                new = [[None] * vecs for _ in range(chans)]
                for j in range(chans):
                    wj = builder.load(builder.gep(wptr, [builder.add(wbase, ir.Constant(_I64, j))]), align=4)
                    wb = _splat(builder, wj, vf32)
                    for r in range(vecs):
                        new[j][r] = builder.call(fma, [xv[r], wb, acc[j][r]])
                return new

            results = _tile_loop(builder, "float_mk", vf32, chans, vecs, n, step, may_be_empty=True)
            for j in range(chans):
                row_off = builder.add(o_off, builder.mul(ir.Constant(_I64, j), o_ld))
                for r in range(vecs):
                    p = builder.gep(optr, [builder.add(row_off, ir.Constant(_I64, lanes * r))])
                    builder.store(results[j][r], builder.bitcast(p, vf32.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    float_microkernel.__name__ = f"float_microkernel_{lanes * vecs}x{chans}"
    return float_microkernel


_V16F32 = ir.VectorType(_F32, 16)
_V16I32 = ir.VectorType(_I32, 16)


def _splat(builder, x, vty):
    """``x`` in every lane of a ``vty`` vector (insert into lane 0, shuffle with a zero mask)."""
    undef = ir.Constant(vty, ir.Undefined)
    mask = ir.Constant(ir.VectorType(_I32, vty.count), [0] * vty.count)
    return builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(_I32, 0)), undef, mask)


def _vector_at(builder, ptr, off, vty):
    return builder.bitcast(builder.gep(ptr, [off]), vty.as_pointer())


def _make_copy64(unit, vty, align, name, doc):
    """An intrinsic ``(dst, dst_off, src, src_off)`` copying 64 bytes between int32
    C-contiguous arrays as one ``vty`` load and store, offsets counted in ``unit``s."""

    @intrinsic
    def copy(typingctx, dst, dst_off, src, src_off):
        if not (_check_array(dst, types.int32) and _check_array(src, types.int32)):
            return None
        sig = types.void(dst, dst_off, src, src_off)

        def codegen(context, builder, signature, args):
            sa = signature.args
            dptr = _data_ptr(context, builder, sa[0], args[0], unit)
            sptr = _data_ptr(context, builder, sa[2], args[2], unit)
            d_off, s_off = (_as_intp(context, builder, args[i], sa[i]) for i in (1, 3))
            v = builder.load(_vector_at(builder, sptr, s_off, vty), align=align)
            builder.store(v, _vector_at(builder, dptr, d_off, vty), align=align)
            return context.get_dummy_value()

        return sig, codegen

    copy.__name__, copy.__doc__ = name, doc
    return copy


copy16 = _make_copy64(_I32, _V16I32, 4, "copy16", """``dst[dst_off + i] = src[src_off + i]`` for ``i < 16``
    (int32, C-contiguous) as one ``<16 x i32>`` load and store: the loop vectoriser leaves
    16-trip loops scalar.""")

copy64_bytes = _make_copy64(_I8, _V64I8, 1, "copy64_bytes", """The 64 bytes at byte offset ``src_off``
    of ``src`` to byte offset ``dst_off`` of ``dst`` (both int32 views of byte buffers, as
    the lut operands), as one unaligned ``<64 x i8>`` load and store (two ymm on AVX2, four
    xmm or NEON registers elsewhere).""")


@intrinsic
def affine16(typingctx, out, out_off, acc, acc_off, a, b, residual, res_off, has_residual, slope):
    """The affine epilogue of 16 consecutive values as ``<16 x float>`` operations (two
    ymm on AVX2, four xmm or NEON registers elsewhere)::

        y = float32(acc[acc_off + i]) · a + b  [+ residual[res_off + i] if has_residual]
        out[out_off + i] = y · slope if y < 0 else y          (i < 16)

    rounded step by step as :func:`sttn_sim.kernels.fused.affine_value` (``sitofp``,
    ``fmul``, ``fadd``, no contraction), so the values are the scalar rule's bit for bit.
    ``acc`` int32, ``out`` and ``residual`` float32, C-contiguous; ``residual`` is read
    only when ``has_residual``."""
    if not (_check_array(out, types.float32) and _check_array(acc, types.int32)
            and _check_array(residual, types.float32) and a == types.float32 and b == types.float32
            and slope == types.float32 and isinstance(has_residual, types.Boolean)):
        return None
    sig = types.void(out, out_off, acc, acc_off, a, b, residual, res_off, has_residual, slope)

    def codegen(context, builder, signature, args):
        sa = signature.args
        optr = _data_ptr(context, builder, sa[0], args[0], _F32)
        aptr = _data_ptr(context, builder, sa[2], args[2], _I32)
        rptr = _data_ptr(context, builder, sa[6], args[6], _F32)
        o_off, a_off, r_off = (_as_intp(context, builder, args[i], sa[i]) for i in (1, 3, 7))
        v = builder.load(_vector_at(builder, aptr, a_off, _V16I32), align=4)
        a, b = (_splat(builder, args[i], _V16F32) for i in (4, 5))
        y = builder.fadd(builder.fmul(builder.sitofp(v, _V16F32), a), b)
        before = builder.block
        with builder.if_then(args[8]):
            with_res = builder.fadd(y, builder.load(_vector_at(builder, rptr, r_off, _V16F32), align=4))
            added = builder.block
        y = _phi(builder, _V16F32, (y, before), (with_res, added))
        negative = builder.fcmp_ordered("<", y, ir.Constant(_V16F32, None))
        builder.store(builder.select(negative, builder.fmul(y, _splat(builder, args[9], _V16F32)), y),
                      _vector_at(builder, optr, o_off, _V16F32), align=4)
        return context.get_dummy_value()

    return sig, codegen


def _phi(builder, ty, *incoming):
    node = builder.phi(ty)
    for value, block in incoming:
        node.add_incoming(value, block)
    return node
