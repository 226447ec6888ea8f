"""Property tests of the codecs against independent references written from their docstrings.

The references below are deliberately naive (numpy float32 arithmetic, Python loops over rows and
groups, a string-based bit packer) so that they share nothing with the vectorized codecs except
the documented formulas.

Data that goes through a *sum* (binary / ternary means) is drawn on a dyadic grid
(integers * 2^e with |integer| <= 1024), so every float32 partial sum is exact and the result
does not depend on summation order; everything else uses arbitrary float32 data.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from zoo.formats import codecs
from zoo.formats.bitpack import pack_bits
from zoo.formats.codecs.kronecker import multiply_adds, shapes_for_ratio
from zoo.formats.errors import CodecError
from zoo.formats.spec import BinarySpec, CodebookSpec, DenseSpec, IntSpec, KroneckerSpec, NMSpec, TernarySpec

PROPS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
FEW = settings(PROPS, max_examples=30)

F32 = np.float32


# ============================================================================= data generation


def matrix_shape(shape):
    if len(shape) == 1:
        return 1, shape[0]
    return shape[0], math.prod(shape[1:])


shapes_2d = st.tuples(st.integers(1, 40), st.integers(1, 300))
shapes_1d = st.tuples(st.integers(1, 300))
shapes_3d = st.one_of(
    st.just((4, 3, 5)),
    st.tuples(st.integers(1, 8), st.integers(1, 6), st.integers(1, 10)),
)
any_shape = st.one_of(shapes_2d, shapes_2d, shapes_1d, shapes_3d)

KINDS = [
    "normal",
    "uniform",
    "small_int",
    "sparse",
    "pruned24",
    "constant",
    "zero_rows",
    "outliers",
    "tiny",
    "few_values",
]


def make_weight(shape, seed: int, kind: str, dyadic: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows, cols = matrix_shape(shape)
    scale = F32(10.0 ** rng.uniform(-3, 2))
    if kind == "normal":
        w = rng.standard_normal((rows, cols)) * scale
    elif kind == "uniform":
        w = rng.uniform(-1, 1, (rows, cols)) * scale
    elif kind == "small_int":  # many exact rounding ties
        w = rng.integers(-8, 9, (rows, cols)) * 2.0 ** int(rng.integers(-12, 3))
    elif kind == "sparse":
        w = rng.standard_normal((rows, cols)) * scale
        w[rng.random((rows, cols)) < rng.uniform(0.3, 0.95)] = 0.0
    elif kind == "pruned24":
        w = prune_24(rng.standard_normal((rows, cols)) * scale)
    elif kind == "constant":
        w = np.full((rows, cols), rng.choice([-1.0, 1.0]) * scale)
    elif kind == "zero_rows":
        w = rng.standard_normal((rows, cols)) * scale
        w[rng.random(rows) < 0.5] = 0.0
    elif kind == "outliers":
        w = rng.standard_normal((rows, cols)) * scale
        w[rng.random((rows, cols)) < 0.02] *= 50.0
    elif kind == "tiny":  # scales in the fp16 subnormal range, or underflowing to 0
        w = rng.standard_normal((rows, cols)) * 10.0 ** rng.uniform(-9, -4)
    elif kind == "few_values":
        w = rng.choice(rng.standard_normal(int(rng.integers(1, 6))) * scale, size=(rows, cols))
    else:  # pragma: no cover
        raise AssertionError(kind)
    w = w.astype(F32)
    if dyadic:
        w = to_dyadic(w)
    return w.reshape(shape)


def to_dyadic(w: np.ndarray) -> np.ndarray:
    """Round to integers * 2^e with |integer| <= 1024 (float32 sums of <= 16384 of them are exact)."""
    amax = float(np.abs(w).max())
    if amax == 0.0:
        return w
    e = math.ceil(math.log2(amax)) - 10
    return (np.rint(w.astype(np.float64) / 2.0**e) * 2.0**e).astype(F32)


def prune_24(w: np.ndarray) -> np.ndarray:
    """Zero the 2 smallest of every 4 along the last axis (tail of a row: keep at most 2)."""
    w = np.array(w, dtype=F32)
    rows, cols = w.shape
    groups = -(-cols // 4)
    padded = np.zeros((rows, groups * 4), dtype=F32)
    padded[:, :cols] = w
    g = padded.reshape(rows, groups, 4)
    rank = np.argsort(np.argsort(-np.abs(g), axis=-1, kind="stable"), axis=-1, kind="stable")
    g[rank >= 2] = 0.0
    return padded[:, :cols].copy()


@st.composite
def weights(draw, shapes=any_shape, dyadic=False, kinds=KINDS):
    shape = draw(shapes)
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(kinds))
    return make_weight(shape, seed, kind, dyadic)


def group_size_for(draw, cols: int):
    """None, a divisor of the row, or an arbitrary size (usually not dividing the row)."""
    divisors = [d for d in range(1, cols + 1) if cols % d == 0]
    return draw(
        st.one_of(
            st.none(),
            st.sampled_from(divisors),
            st.integers(1, cols + 5),
            st.sampled_from([1, 2, 3, 7, 32, 64, 128]),
        )
    )


INT_MODES = [("sym", True, True), ("midrise", True, False), ("asym", False, True)]


def int_spec(draw, cols):
    mode = draw(st.sampled_from(INT_MODES))
    lo = 2 if mode[0] == "sym" else 1
    return IntSpec(
        bits=draw(st.integers(lo, 8)),
        group_size=group_size_for(draw, cols),
        symmetric=mode[1],
        zero_preserving=mode[2],
        scale_dtype=draw(st.sampled_from(["float16", "float16", "bfloat16", "float32"])),
    )


# ============================================================================= references


class Overflow(Exception):
    pass


def ref_round(x, dtype: str) -> np.ndarray:
    """Round float32 values to the storage dtype (nearest, ties to even), returned as float32."""
    x = np.asarray(x, dtype=F32)
    if dtype == "float32":
        r = x.copy()
    elif dtype == "float16":
        with np.errstate(over="ignore"):
            r = x.astype(np.float16).astype(F32)
    elif dtype == "bfloat16":
        u = x.view(np.uint32).astype(np.uint64)
        u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
        r = u.astype(np.uint32).view(F32)
    else:  # pragma: no cover
        raise AssertionError(dtype)
    if not np.all(np.isfinite(r)):
        raise Overflow
    return r


def ref_pack(codes, bits: int) -> bytes:
    stream = "".join(format(int(c), f"0{bits}b")[::-1] for c in codes)
    stream += "0" * (-len(stream) % 8)
    return bytes(int(stream[k : k + 8][::-1], 2) for k in range(0, len(stream), 8))


def ref_pack_trits(trits) -> bytes:
    t = [int(v) for v in trits] + [0] * (-len(trits) % 5)
    return bytes(sum(v * 3**i for i, v in enumerate(t[k : k + 5])) for k in range(0, len(t), 5))


def group_slices(cols: int, group_size):
    g = cols if group_size is None else group_size
    return [slice(s, min(s + g, cols)) for s in range(0, cols, g)]


def ref_int(w2: np.ndarray, spec: IntSpec):
    """-> (codes u (rows, cols) int, scales (rows, groups) f32, zero points (rows, groups) int, decoded)."""
    rows, cols = w2.shape
    b = spec.bits
    half, levels = 2 ** (b - 1), 2**b - 1
    sl = group_slices(cols, spec.group_size)
    codes = np.zeros((rows, cols), dtype=np.int64)
    scales = np.zeros((rows, len(sl)), dtype=F32)
    zeros = np.zeros((rows, len(sl)), dtype=np.int64)
    out = np.zeros((rows, cols), dtype=F32)
    for r in range(rows):
        for gi, s_ in enumerate(sl):
            x = w2[r, s_].astype(F32)
            if spec.symmetric:
                absmax = np.abs(x).max()
                if spec.zero_preserving:
                    s = ref_round(absmax / F32(half - 1), spec.scale_dtype)[()]
                    sd = s if s != 0 else F32(1)
                    q = np.clip(np.rint(x / sd), -(half - 1), half - 1)
                    val = q * s
                else:
                    s = ref_round(absmax / F32(half - 0.5), spec.scale_dtype)[()]
                    sd = s if s != 0 else F32(1)
                    # nearest mid-rise level (q + 1/2) s: q = floor(x / s)
                    q = np.clip(np.floor(x / sd), -half, half - 1)
                    val = (q + F32(0.5)) * s
                u = q.astype(np.int64) + half
            else:
                lo = min(x.min(), F32(0))
                hi = max(x.max(), F32(0))
                s = ref_round((hi - lo) / F32(levels), spec.scale_dtype)[()]
                sd = s if s != 0 else F32(1)
                z = np.clip(np.rint(-lo / sd), 0, levels)
                uf = np.clip(np.rint(x / sd) + z, 0, levels)
                val = (uf - z) * s
                u = uf.astype(np.int64)
                zeros[r, gi] = int(z)
            assert val.dtype == F32
            codes[r, s_] = u
            scales[r, gi] = s
            out[r, s_] = val
    return codes, scales, zeros, out


def ref_binary(w2: np.ndarray, spec: BinarySpec):
    rows, cols = w2.shape
    sl = group_slices(cols, spec.group_size)
    bits = (w2 >= 0).astype(np.int64)  # -0.0 >= 0
    scales = np.zeros((rows, len(sl)), dtype=F32)
    out = np.zeros((rows, cols), dtype=F32)
    for r in range(rows):
        for gi, s_ in enumerate(sl):
            x = w2[r, s_]
            total = F32(np.abs(x.astype(np.float64)).sum())  # exact for dyadic data
            alpha = ref_round(total / F32(x.size), spec.scale_dtype)[()]
            scales[r, gi] = alpha
            out[r, s_] = np.where(bits[r, s_] == 1, alpha, -alpha)
    return bits, scales, out


def ref_ternary(w2: np.ndarray, spec: TernarySpec):
    rows, cols = w2.shape
    sl = group_slices(cols, spec.group_size)
    trits = np.zeros((rows, cols), dtype=np.int64)
    scales = np.zeros((rows, len(sl)), dtype=F32)
    out = np.zeros((rows, cols), dtype=F32)
    for r in range(rows):
        for gi, s_ in enumerate(sl):
            x = w2[r, s_]
            mag = np.abs(x)
            total = F32(mag.astype(np.float64).sum())
            delta = (F32(spec.threshold) * total) / F32(x.size)
            t = (x > delta).astype(np.int64) - (x < -delta).astype(np.int64)
            kept = t != 0
            kept_sum = F32(mag[kept].astype(np.float64).sum())
            alpha = ref_round(kept_sum / F32(max(int(kept.sum()), 1)), spec.scale_dtype)[()]
            trits[r, s_] = t
            scales[r, gi] = alpha
            out[r, s_] = t.astype(F32) * alpha
    return trits, scales, out


def ref_nm_select(w2: np.ndarray, n: int, m: int):
    """-> (pattern codes per (row, group) in row-major order, kept values (rows, groups*n),
    kept positions [(row, col)] of real weights per kept slot or None for padding)."""
    rows, cols = w2.shape
    groups = math.ceil(cols / m)
    codes = []
    kept = np.zeros((rows, groups * n), dtype=F32)
    where = []
    for r in range(rows):
        row = [float(v) for v in w2[r]]
        slots = []
        for gi in range(groups):
            start = gi * m
            real = list(range(min(m, cols - start)))
            order = sorted(real, key=lambda j: (-abs(row[start + j]), j))  # largest |w|, ties: lower
            pos = sorted(order[:n])
            pos += list(range(len(real), m))[: n - len(pos)]  # padding only once no real weight is left
            assert pos == sorted(pos) and len(pos) == n
            codes.append(sum(math.comb(c, i + 1) for i, c in enumerate(pos)))
            for c in pos:
                slots.append(start + c if c < len(real) else None)
        for k, col in enumerate(slots):
            kept[r, k] = 0.0 if col is None else w2[r, col]
        where.append(slots)
    return codes, kept, where


def nm_pattern_bits(n: int, m: int) -> int:
    return max(1, (math.comb(m, n) - 1).bit_length())


def ref_value_decode(kept: np.ndarray, spec) -> np.ndarray:
    if isinstance(spec, IntSpec):
        return ref_int(kept, spec)[3]
    if isinstance(spec, DenseSpec):
        return ref_round(kept, spec.dtype)
    if isinstance(spec, BinarySpec):
        return ref_binary(kept, spec)[2]
    if isinstance(spec, TernarySpec):
        return ref_ternary(kept, spec)[2]
    raise AssertionError(spec)  # pragma: no cover


def ref_nm_decode(w2: np.ndarray, spec: NMSpec) -> np.ndarray:
    _, kept, where = ref_nm_select(w2, spec.n, spec.m)
    vals = ref_value_decode(kept, spec.values)
    out = np.zeros_like(w2, dtype=F32)
    for r, slots in enumerate(where):
        for k, col in enumerate(slots):
            if col is not None:
                out[r, col] = vals[r, k]
    return out


def t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def assert_bit_exact(got: torch.Tensor, want: np.ndarray, shape):
    assert got.dtype == torch.float32
    assert tuple(got.shape) == tuple(shape)
    want_t = t(want.astype(F32)).reshape(shape)
    if not torch.equal(got, want_t):
        diff = (got != want_t).nonzero()
        first = tuple(diff[0].tolist())
        raise AssertionError(
            f"{diff.shape[0]} mismatches; first at {first}: got {got[first].item()!r}, want {want_t[first].item()!r}"
        )


def check_layout(enc: dict, shape, spec):
    lay = codecs.layout(shape, spec)
    assert set(enc) == set(lay)
    for k, v in enc.items():
        assert tuple(v.shape) == lay[k].shape, k
        assert v.dtype == lay[k].dtype, k
    assert sum(v.numel() * v.element_size() for v in enc.values()) == codecs.nbytes(shape, spec)


def encode_or_overflow(w: np.ndarray, spec, ref):
    """Run the reference first; if it overflows the storage dtype, the codec must refuse too."""
    try:
        expected = ref()
    except Overflow:
        with pytest.raises(CodecError):
            codecs.encode(t(w), spec)
        return None, None
    return codecs.encode(t(w), spec), expected


# ============================================================================= int


@PROPS
@given(st.data())
def test_int_matches_reference(data):
    w = data.draw(weights())
    rows, cols = matrix_shape(w.shape)
    spec = int_spec(data.draw, cols)
    w2 = w.reshape(rows, cols)
    enc, expected = encode_or_overflow(w, spec, lambda: ref_int(w2, spec))
    if enc is None:
        return
    codes, scales, zeros, out = expected
    check_layout(enc, w.shape, spec)
    # stored format
    assert bytes(enc["packed"].tolist()) == ref_pack(codes.reshape(-1), spec.bits)
    assert torch.equal(enc["scale"].to(torch.float32), t(scales))
    if not spec.symmetric:
        assert bytes(enc["zero_point"].tolist()) == ref_pack(zeros.reshape(-1), spec.bits)
    elif spec.zero_preserving:
        assert codes.min() >= 1  # u = 0 is never produced
    # decoded values
    assert_bit_exact(codecs.decode(enc, spec, w.shape), out, w.shape)


VALID_INT = [(b, mode) for b in range(1, 9) for mode in INT_MODES if not (mode[0] == "sym" and b < 2)]


@pytest.mark.parametrize("bits, mode", VALID_INT, ids=[f"int{b}-{m[0]}" for b, m in VALID_INT])
@pytest.mark.parametrize("group_size", [None, 1, 4, 5, 16, 128])
def test_int_every_bit_width_fixed_shapes(bits, mode, group_size):
    spec = IntSpec(bits=bits, group_size=group_size, symmetric=mode[1], zero_preserving=mode[2])
    for shape, kind in (((7, 33), "normal"), ((4, 3, 5), "small_int"), ((37,), "sparse")):
        w = make_weight(shape, bits * 100 + len(shape), kind)
        rows, cols = matrix_shape(shape)
        codes, _, _, out = ref_int(w.reshape(rows, cols), spec)
        enc = codecs.encode(t(w), spec)
        check_layout(enc, shape, spec)
        assert bytes(enc["packed"].tolist()) == ref_pack(codes.reshape(-1), bits)
        assert_bit_exact(codecs.decode(enc, spec, shape), out, shape)


def test_int4_hand_example():
    # absmax 7 -> s = 1; q = round half even(w); 2.5 -> 2, -0.5 -> -0, 3.5 -> 4
    w = torch.tensor([[7.0, 2.5, -0.5, 3.5, -7.0, 0.0]])
    spec = IntSpec(bits=4, group_size=None)
    enc = codecs.encode(w, spec)
    assert enc["scale"].tolist() == [[1.0]]
    # u = q + 8: [15, 10, 8, 12, 1, 8] -> bytes (15 | 10<<4), (8 | 12<<4), (1 | 8<<4)
    assert enc["packed"].tolist() == [0xAF, 0xC8, 0x81]
    assert codecs.decode(enc, spec, (1, 6)).tolist() == [[7.0, 2.0, 0.0, 4.0, -7.0, 0.0]]


def test_int_tiny_weights_underflowing_scale_decode_to_zero():
    w = torch.tensor([[1e-9, -3e-9, 0.0, 2e-9]])
    for spec in (IntSpec(bits=4), IntSpec(bits=4, symmetric=False), IntSpec(bits=3, zero_preserving=False)):
        enc = codecs.encode(w, spec)
        assert float(enc["scale"].abs().max()) == 0.0
        assert torch.equal(codecs.decode(enc, spec, (1, 4)), torch.zeros(1, 4))


def test_int_scale_overflowing_fp16_raises_and_fp32_scale_works():
    w = torch.tensor([[1e6, -2e6, 3.0]])
    with pytest.raises(CodecError):
        codecs.encode(w, IntSpec(bits=4))
    spec = IntSpec(bits=4, scale_dtype="float32")
    _, _, _, out = ref_int(w.numpy(), spec)
    assert_bit_exact(codecs.decode(codecs.encode(w, spec), spec, (1, 3)), out, (1, 3))


# ============================================================================= binary / ternary


@PROPS
@given(st.data())
def test_binary_matches_reference(data):
    w = data.draw(weights(dyadic=True))
    rows, cols = matrix_shape(w.shape)
    spec = BinarySpec(
        group_size=group_size_for(data.draw, cols),
        scale_dtype=data.draw(st.sampled_from(["float16", "bfloat16", "float32"])),
    )
    w2 = w.reshape(rows, cols)
    enc, expected = encode_or_overflow(w, spec, lambda: ref_binary(w2, spec))
    if enc is None:
        return
    bits, scales, out = expected
    check_layout(enc, w.shape, spec)
    assert bytes(enc["packed"].tolist()) == ref_pack(bits.reshape(-1), 1)
    assert torch.equal(enc["scale"].to(torch.float32), t(scales))
    assert_bit_exact(codecs.decode(enc, spec, w.shape), out, w.shape)


def test_binary_negative_zero_maps_to_plus_alpha():
    w = torch.tensor([[-0.0, 0.0, -2.0, 2.0]])
    spec = BinarySpec(group_size=None)
    enc = codecs.encode(w, spec)
    assert enc["packed"].tolist() == [0b1011]
    assert codecs.decode(enc, spec, (1, 4)).tolist() == [[1.0, 1.0, -1.0, 1.0]]


@PROPS
@given(st.data())
def test_binary_arbitrary_floats(data):
    """Arbitrary float32 data: signs exact, scale = fp16(mean |w|) up to summation order."""
    w = data.draw(weights())
    rows, cols = matrix_shape(w.shape)
    spec = BinarySpec(group_size=group_size_for(data.draw, cols))
    enc = codecs.encode(t(w), spec)
    check_layout(enc, w.shape, spec)
    w2 = w.reshape(rows, cols)
    assert bytes(enc["packed"].tolist()) == ref_pack((w2 >= 0).reshape(-1), 1)
    sl = group_slices(cols, spec.group_size)
    ref_alpha = np.array([[np.abs(w2[r, s_].astype(np.float64)).mean() for s_ in sl] for r in range(rows)])
    got_alpha = enc["scale"].to(torch.float64).numpy()
    np.testing.assert_allclose(got_alpha, ref_alpha, rtol=2**-10, atol=2**-24)
    dec = codecs.decode(enc, spec, w.shape).reshape(rows, cols).numpy()
    assert np.array_equal(
        np.abs(dec), np.repeat(enc["scale"].float().numpy(), [s_.stop - s_.start for s_ in sl], axis=1)
    )


@PROPS
@given(st.data())
def test_ternary_matches_reference(data):
    w = data.draw(weights(dyadic=True))
    rows, cols = matrix_shape(w.shape)
    spec = TernarySpec(
        group_size=group_size_for(data.draw, cols),
        threshold=data.draw(st.one_of(st.sampled_from([0.0, 0.5, 0.7, 1.0, 2.0]), st.floats(0.0, 3.0))),
        scale_dtype=data.draw(st.sampled_from(["float16", "bfloat16", "float32"])),
    )
    w2 = w.reshape(rows, cols)
    enc, expected = encode_or_overflow(w, spec, lambda: ref_ternary(w2, spec))
    if enc is None:
        return
    trits, scales, out = expected
    check_layout(enc, w.shape, spec)
    assert bytes(enc["packed"].tolist()) == ref_pack_trits((trits + 1).reshape(-1))
    assert torch.equal(enc["scale"].to(torch.float32), t(scales))
    assert_bit_exact(codecs.decode(enc, spec, w.shape), out, w.shape)


def test_ternary_hand_example():
    # mean |w| = (4 + 1 + 0 + 2 + 3) / 5 = 2; delta = 0.5 * 2 = 1 -> t = [-1, 0, 0, +1, +1]
    # (|-1| = 1 <= delta gives 0); alpha = mean of kept |w| = (4 + 2 + 3) / 3 = 3
    w = torch.tensor([[-4.0, -1.0, 0.0, 2.0, 3.0]])
    spec = TernarySpec(group_size=None, threshold=0.5)
    enc = codecs.encode(w, spec)
    assert enc["scale"].tolist() == [[3.0]]
    assert enc["packed"].tolist() == [0 + 3 * 1 + 9 * 1 + 27 * 2 + 81 * 2]
    assert codecs.decode(enc, spec, (1, 5)).tolist() == [[-3.0, 0.0, 0.0, 3.0, 3.0]]


# ============================================================================= dense


@FEW
@given(weights(), st.sampled_from(["float32", "float16", "bfloat16"]))
def test_dense_matches_reference(w, dtype):
    w = np.clip(w, -60000, 60000)
    spec = DenseSpec(dtype=dtype)
    enc = codecs.encode(t(w), spec)
    check_layout(enc, w.shape, spec)
    assert_bit_exact(codecs.decode(enc, spec, w.shape), ref_round(w, dtype), w.shape)


def test_dense_fp16_overflow_refused():
    with pytest.raises(CodecError):
        codecs.encode(torch.tensor([70000.0, 1.0]), DenseSpec(dtype="float16"))


# ============================================================================= N:M


nm_pairs = st.integers(2, 16).flatmap(lambda m: st.tuples(st.integers(1, m - 1), st.just(m)))


@PROPS
@given(st.data())
def test_nm_dense_fp32_matches_reference(data):
    w = data.draw(weights())
    n, m = data.draw(nm_pairs)
    spec = NMSpec(n=n, m=m, values=DenseSpec(dtype="float32"))
    rows, cols = matrix_shape(w.shape)
    w2 = w.reshape(rows, cols)
    enc = codecs.encode(t(w), spec)
    check_layout(enc, w.shape, spec)
    codes, kept, _ = ref_nm_select(w2, n, m)
    assert bytes(enc["nm_codes"].tolist()) == ref_pack(codes, nm_pattern_bits(n, m))
    assert torch.equal(enc["values"], t(kept))
    dec = codecs.decode(enc, spec, w.shape)
    assert_bit_exact(dec, ref_nm_decode(w2, spec), w.shape)
    # at most n nonzeros per group of m; every nonzero is the original weight
    d2 = dec.reshape(rows, cols).numpy()
    for s in range(0, cols, m):
        assert (np.count_nonzero(d2[:, s : s + m], axis=1) <= n).all()
    nz = d2 != 0
    assert np.array_equal(d2[nz], w2[nz])


@st.composite
def nm_value_specs(draw, cols_hint: int = 64):
    kind = draw(st.sampled_from(["int", "int", "dense", "binary", "ternary"]))
    if kind == "int":
        return int_spec(draw, cols_hint)
    if kind == "dense":
        return DenseSpec(dtype=draw(st.sampled_from(["float32", "float16", "bfloat16"])))
    g = draw(st.one_of(st.none(), st.integers(1, 40)))
    if kind == "binary":
        return BinarySpec(group_size=g)
    return TernarySpec(group_size=g, threshold=draw(st.floats(0.0, 2.0)))


@PROPS
@given(st.data())
def test_nm_composed_matches_reference(data):
    w = data.draw(weights(dyadic=True))
    n, m = data.draw(st.one_of(st.just((2, 4)), nm_pairs))
    rows, cols = matrix_shape(w.shape)
    values = data.draw(nm_value_specs(math.ceil(cols / m) * n))
    spec = NMSpec(n=n, m=m, values=values)
    w2 = w.reshape(rows, cols)
    enc, out = encode_or_overflow(w, spec, lambda: ref_nm_decode(w2, spec))
    if enc is None:
        return
    check_layout(enc, w.shape, spec)
    dec = codecs.decode(enc, spec, w.shape)
    assert_bit_exact(dec, out, w.shape)
    d2 = dec.reshape(rows, cols).numpy()
    for s in range(0, cols, m):
        assert (np.count_nonzero(d2[:, s : s + m], axis=1) <= n).all()


@PROPS
@given(weights(shapes=st.one_of(shapes_2d, shapes_3d)), st.sampled_from([None, 16, 128, 7]))
def test_nm24_int4_matches_reference(w, group_size):
    spec = NMSpec(n=2, m=4, values=IntSpec(bits=4, group_size=group_size))
    rows, cols = matrix_shape(w.shape)
    enc = codecs.encode(t(w), spec)
    check_layout(enc, w.shape, spec)
    assert_bit_exact(codecs.decode(enc, spec, w.shape), ref_nm_decode(w.reshape(rows, cols), spec), w.shape)


@pytest.mark.parametrize("cols", [1, 2, 3, 5, 6, 7, 13, 17])
def test_nm24_ragged_rows(cols):
    rng = np.random.default_rng(cols)
    w = rng.standard_normal((6, cols)).astype(F32)
    w[0] = 0.0
    w[1, ::2] = 0.0
    spec = NMSpec(n=2, m=4, values=DenseSpec(dtype="float32"))
    enc = codecs.encode(t(w), spec)
    assert enc["values"].shape == (6, math.ceil(cols / 4) * 2)
    check_layout(enc, w.shape, spec)
    dec = codecs.decode(enc, spec, w.shape)
    assert_bit_exact(dec, ref_nm_decode(w, spec), w.shape)
    d = dec.numpy()
    for s in range(0, cols, 4):
        block = d[:, s : s + 4]
        assert (np.count_nonzero(block, axis=1) <= 2).all()
        # the kept weights are the largest |w| of the (possibly short) group
        for r in range(6):
            keep = min(2, block.shape[1])
            assert (
                np.sort(np.abs(block[r]))[::-1][:keep].tolist()
                == np.sort(np.abs(w[r, s : s + 4]))[::-1][:keep].tolist()
            )


def test_nm_ties_go_to_lower_position():
    w = torch.tensor([[1.0, -1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 3.0, -3.0, 3.0]])
    spec = NMSpec(n=2, m=4, values=DenseSpec(dtype="float32"))
    dec = codecs.decode(codecs.encode(w, spec), spec, (1, 11))
    assert dec.tolist() == [[1.0, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 3.0, -3.0, 0.0]]


def test_nm_pattern_codes_by_hand():
    # 2:4 colex ranks: {0,1}->0, {0,2}->1, {1,2}->2, {0,3}->3, {1,3}->4, {2,3}->5; 3 bits each.
    w = torch.tensor([[5.0, 4.0, 0.0, 0.0, 5.0, 0.0, 4.0, 0.0, 0.0, 0.0, 4.0, 5.0, 0.0, 5.0, 0.0, 4.0]])
    enc = codecs.encode(w, NMSpec(n=2, m=4, values=DenseSpec(dtype="float32")))
    codes = [0, 1, 5, 4]
    assert bytes(enc["nm_codes"].tolist()) == ref_pack(codes, 3)
    assert enc["values"].tolist() == [[5.0, 4.0, 5.0, 4.0, 4.0, 5.0, 5.0, 4.0]]


@PROPS
@given(st.data())
def test_nm_sparse_input_reproduced_exactly(data):
    n, m = data.draw(nm_pairs)
    shape = data.draw(any_shape)
    rows, cols = matrix_shape(shape)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    w = rng.standard_normal((rows, cols)).astype(F32)
    for s in range(0, cols, m):  # keep a random subset of at most n per group
        for r in range(rows):
            g = min(m, cols - s)
            drop = rng.permutation(g)[: max(g - int(rng.integers(0, n + 1)), 0)]
            w[r, s + drop] = 0.0
    w = w.reshape(shape)
    spec = NMSpec(n=n, m=m, values=DenseSpec(dtype="float32"))
    dec = codecs.decode(codecs.encode(t(w), spec), spec, shape)
    assert torch.equal(dec, t(w))


def test_nm24_int4_compression_ratio():
    shape = (384, 1536)
    spec = NMSpec(n=2, m=4, values=IntSpec(bits=4, group_size=128))
    total = codecs.nbytes(shape, spec)
    # 147456 groups * 3 bits + 294912 values * 4 bits + 384*6 fp16 scales
    assert total == 55296 + 147456 + 4608
    assert math.prod(shape) * 4 / total >= 11.0
    w = torch.from_numpy(prune_24(np.random.default_rng(0).standard_normal(shape).astype(F32)))
    enc = codecs.encode(w, spec)
    assert sum(v.numel() * v.element_size() for v in enc.values()) == total
    dec = codecs.decode(enc, spec, shape)
    assert bool((dec[w == 0] == 0).all())


def test_nm_invalid_pattern_code_raises():
    spec = NMSpec(n=2, m=4, values=DenseSpec(dtype="float32"))
    w = torch.randn(3, 8)
    enc = codecs.encode(w, spec)
    for bad in (6, 7):  # C(4,2) = 6 valid codes, 3 bits
        codes = torch.zeros(6, dtype=torch.int32)
        codes[4] = bad
        broken = dict(enc, nm_codes=pack_bits(codes, 3))
        with pytest.raises(CodecError):
            codecs.decode(broken, spec, (3, 8))
    # one valid code larger than every other still decodes
    codes = torch.full((6,), 5, dtype=torch.int32)
    codecs.decode(dict(enc, nm_codes=pack_bits(codes, 3)), spec, (3, 8))


@pytest.mark.parametrize("n, m", [(1, 16), (8, 16), (15, 16), (3, 7), (1, 2), (5, 9)])
def test_nm_pattern_code_space(n, m):
    """Every pattern code 0..C(M,N)-1 decodes to a distinct N-subset; code C(M,N) is refused if representable."""
    c = math.comb(m, n)
    spec = NMSpec(n=n, m=m, values=DenseSpec(dtype="float32"))
    layout = codecs.layout((c, m), spec)
    values = torch.arange(1, c * n + 1, dtype=torch.float32).reshape(c, n)
    tensors = {"nm_codes": pack_bits(torch.arange(c), nm_pattern_bits(n, m)), "values": values}
    assert tuple(tensors["nm_codes"].shape) == layout["nm_codes"].shape
    dec = codecs.decode(tensors, spec, (c, m))
    masks = {tuple((dec[i] != 0).tolist()) for i in range(c)}
    assert len(masks) == c and all(sum(mk) == n for mk in masks)
    for i in range(c):
        pos = tuple(int(p) for p in (dec[i] != 0).nonzero().reshape(-1))
        assert sum(math.comb(p, k + 1) for k, p in enumerate(pos)) == i
        assert dec[i][list(pos)].tolist() == values[i].tolist()
    if c < (1 << nm_pattern_bits(n, m)):
        bad = {"nm_codes": pack_bits(torch.full((c,), c), nm_pattern_bits(n, m)), "values": values}
        with pytest.raises(CodecError):
            codecs.decode(bad, spec, (c, m))


# ============================================================================= codebook


@PROPS
@given(st.data())
def test_codebook_properties(data):
    w = data.draw(weights())
    rows, cols = matrix_shape(w.shape)
    spec = CodebookSpec(
        bits=data.draw(st.integers(1, 8)),
        group_rows=data.draw(st.one_of(st.none(), st.integers(1, 45))),
        iterations=data.draw(st.sampled_from([0, 1, 5, 30])),
        centroid_dtype=data.draw(st.sampled_from(["float16", "float16", "bfloat16", "float32"])),
    )
    enc = codecs.encode(t(w), spec)
    check_layout(enc, w.shape, spec)
    book = enc["codebook"].to(torch.float32).numpy()
    assert (np.diff(book, axis=1) >= 0).all(), "codebook not stored ascending"
    per = rows if spec.group_rows is None else min(spec.group_rows, rows)
    assert book.shape == (math.ceil(rows / per), 1 << spec.bits)
    dec = codecs.decode(enc, spec, w.shape).reshape(rows, cols).numpy()
    w2 = w.reshape(rows, cols)
    for r in range(rows):
        c = book[r // per]
        assert np.isin(dec[r], c).all()
        best = np.abs(w2[r][:, None] - c[None, :]).min(axis=1)  # float32 arithmetic
        assert best.dtype == F32
        assert np.array_equal(np.abs(w2[r] - dec[r]), best)


@PROPS
@given(st.data())
def test_codebook_exact_for_few_distinct_values(data):
    shape = data.draw(any_shape)
    rows, cols = matrix_shape(shape)
    bits = data.draw(st.integers(1, 8))
    k = 1 << bits
    group_rows = data.draw(st.one_of(st.none(), st.integers(1, 45)))
    per = rows if group_rows is None else min(group_rows, rows)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    w = np.zeros((rows, cols), dtype=F32)
    for start in range(0, rows, per):
        block = w[start : start + per]
        distinct = int(rng.integers(1, k + 1))
        vals = (rng.standard_normal(distinct) * 10.0 ** rng.uniform(-3, 3)).astype(np.float16).astype(F32)
        block[...] = rng.choice(vals, size=block.shape)
    spec = CodebookSpec(bits=bits, group_rows=group_rows, iterations=data.draw(st.sampled_from([0, 3, 30])))
    w = w.reshape(shape)
    enc = codecs.encode(t(w), spec)
    assert torch.equal(codecs.decode(enc, spec, shape), t(w))


def test_codebook_index_ties_go_to_lower_index():
    from zoo.formats.bitpack import unpack_bits

    # 2 distinct values, 4 slots: the codebook is padded with its largest value -> [1, 2, 2, 2]
    w = torch.tensor([[1.0, 2.0, 2.0, 1.0]])
    enc = codecs.encode(w, CodebookSpec(bits=2))
    assert enc["codebook"].tolist() == [[1.0, 2.0, 2.0, 2.0]]
    assert unpack_bits(enc["indices"], 2, 4).tolist() == [0, 1, 1, 0]


def test_codebook_group_rows_tail_block():
    w = torch.tensor([[1.0, 2.0], [1.0, 2.0], [10.0, 20.0], [10.0, 20.0], [-5.0, -6.0]])
    spec = CodebookSpec(bits=1, group_rows=2)
    enc = codecs.encode(w, spec)
    assert enc["codebook"].tolist() == [[1.0, 2.0], [10.0, 20.0], [-6.0, -5.0]]
    assert torch.equal(codecs.decode(enc, spec, (5, 2)), w)


# ============================================================================= Kronecker


@st.composite
def kron_cases(draw):
    m1, n1, m2, n2 = (draw(st.integers(1, 7)) for _ in range(4))
    rank = draw(st.integers(1, min(m1 * n1, m2 * n2)))
    kind = draw(st.sampled_from(["dense", "int", "codebook", "binary", "ternary"]))
    if kind == "dense":
        factors = DenseSpec(dtype=draw(st.sampled_from(["float32", "float16", "bfloat16"])))
    elif kind == "int":
        factors = int_spec(draw, max(m1 * n1, m2 * n2))
    elif kind == "codebook":
        factors = CodebookSpec(bits=draw(st.integers(1, 6)), iterations=5)
    elif kind == "binary":
        factors = BinarySpec(group_size=draw(st.one_of(st.none(), st.integers(1, 10))))
    else:
        factors = TernarySpec(group_size=draw(st.one_of(st.none(), st.integers(1, 10))))
    seed = draw(st.integers(0, 2**32 - 1))
    wkind = draw(st.sampled_from(["normal", "uniform", "sparse", "small_int", "constant", "zero_rows"]))
    w = make_weight((m1 * m2, n1 * n2), seed, wkind)
    return w, KroneckerSpec(a_shape=(m1, n1), rank=rank, factors=factors)


@PROPS
@given(kron_cases())
def test_kronecker_decode_is_sum_of_kron_of_decoded_factors(case):
    w, spec = case
    (m1, n1), rank = spec.a_shape, spec.rank
    m2, n2 = w.shape[0] // m1, w.shape[1] // n1
    enc = codecs.encode(t(w), spec)
    check_layout(enc, w.shape, spec)
    a_t = {k[len("kron_a_") :]: v for k, v in enc.items() if k.startswith("kron_a_")}
    b_t = {k[len("kron_b_") :]: v for k, v in enc.items() if k.startswith("kron_b_")}
    assert len(a_t) + len(b_t) == len(enc)
    a = codecs.decode(a_t, spec.factors, (rank, m1, n1))
    b = codecs.decode(b_t, spec.factors, (rank, m2, n2))
    want = torch.zeros(w.shape, dtype=torch.float32)
    for r in range(rank):
        want = want + torch.kron(a[r], b[r])
    got = codecs.decode(enc, spec, w.shape)
    assert got.dtype == torch.float32 and tuple(got.shape) == w.shape
    assert torch.equal(got, want)


@PROPS
@given(st.data())
def test_kronecker_recovers_exact_product(data):
    m1, n1, m2, n2 = (data.draw(st.integers(1, 8)) for _ in range(4))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a = (rng.standard_normal((m1, n1)) * 10.0 ** rng.uniform(-2, 2)).astype(np.float16).astype(F32)
    b = (rng.standard_normal((m2, n2)) * 10.0 ** rng.uniform(-2, 2)).astype(np.float16).astype(F32)
    assume(np.abs(a).max() > 0 and np.abs(b).max() > 0)
    w = np.kron(a, b).astype(F32)
    spec = KroneckerSpec(a_shape=(m1, n1), rank=1, factors=DenseSpec(dtype="float32"))
    got = codecs.decode(codecs.encode(t(w), spec), spec, w.shape).numpy()
    scale = float(np.abs(w).max())
    np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-5 * scale)


def test_kronecker_a_shape_not_dividing_raises():
    w = torch.randn(6, 10)
    for a_shape in ((4, 2), (3, 3), (7, 5)):
        spec = KroneckerSpec(a_shape=a_shape)
        with pytest.raises(CodecError):
            codecs.encode(w, spec)
        with pytest.raises(CodecError):
            codecs.layout((6, 10), spec)
        with pytest.raises(CodecError):
            codecs.nbytes((6, 10), spec)


def test_kronecker_needs_2d_and_rank_fitting():
    with pytest.raises(CodecError):
        codecs.encode(torch.randn(4, 3, 5), KroneckerSpec(a_shape=(2, 1)))
    with pytest.raises(CodecError):
        codecs.encode(torch.randn(12), KroneckerSpec(a_shape=(1, 3)))
    with pytest.raises(CodecError):
        codecs.encode(torch.randn(4, 6), KroneckerSpec(a_shape=(2, 3), rank=5))  # min(6, 4) = 4
    codecs.encode(torch.randn(4, 6), KroneckerSpec(a_shape=(2, 3), rank=4))


def _split_bytes(shape, m2, n2, rank, factors):
    """Stored bytes of rank-`rank` factors with B m2 x n2, or None when that split is not allowed."""
    (m, n) = shape
    m1, n1 = m // m2, n // n2
    if m1 * n1 == 1 or m2 * n2 == 1 or rank > min(m1 * n1, m2 * n2):
        return None
    return codecs.nbytes(shape, KroneckerSpec(b_shape=(m2, n2), rank=rank, factors=factors))


@PROPS
@given(st.data())
def test_kronecker_shapes_for_a_ratio_reach_it_with_the_most_bytes(data):
    m, n = data.draw(st.integers(1, 48)), data.draw(st.integers(1, 48))
    ratio = data.draw(st.floats(1.01, 40))
    rank = data.draw(st.integers(1, 3))
    one_row = data.draw(st.booleans())
    factors = data.draw(
        st.sampled_from([DenseSpec(), DenseSpec(dtype="float32"), IntSpec(bits=8), IntSpec(bits=4, group_size=8)])
    )
    budget = 4 * m * n / ratio
    splits = {
        (m2, n2): _split_bytes((m, n), m2, n2, rank, factors)
        for m2 in range(1, m + 1)
        for n2 in range(1, n + 1)
        if m % m2 == 0 and n % n2 == 0 and (m2 == 1 or not one_row)
    }
    fitting = {k: v for k, v in splits.items() if v is not None and v <= budget}
    if not fitting:
        with pytest.raises(CodecError, match="no Kronecker factor shapes"):
            shapes_for_ratio((m, n), ratio, rank=rank, factors=factors, one_row_b=one_row)
        return
    spec = shapes_for_ratio((m, n), ratio, rank=rank, factors=factors, one_row_b=one_row)
    assert spec.rank == rank and spec.factors == factors and (spec.b_shape[0] == 1 or not one_row)
    stored = codecs.nbytes((m, n), spec)
    assert stored == fitting[spec.b_shape] and 4 * m * n / stored >= ratio
    assert stored == max(fitting.values())  # the closest to the target: no split that fits stores more


def test_kronecker_shapes_for_a_ratio_on_minilm_layers():
    int8 = IntSpec(bits=8, group_size=64)
    # 8x smaller with int8 factors leaves 2 bytes per 1 fp32 weight... minus the scales: 1/3 of the
    # parameters is the largest split that fits (B 1x3); ties go to the fewest multiply-adds
    spec = shapes_for_ratio((384, 384), 8, factors=int8)
    assert spec.b_shape == (1, 3) and 4 * 384 * 384 / codecs.nbytes((384, 384), spec) >= 8
    assert multiply_adds((384, 128), (1, 3), 1) < 384 * 384 / 2
    assert shapes_for_ratio((30522, 384), 16, factors=int8, one_row_b=True).b_shape == (1, 6)
    with pytest.raises(CodecError, match="must be above 1"):
        shapes_for_ratio((8, 8), 1.0)
    with pytest.raises(CodecError, match="2-D"):
        shapes_for_ratio((8,), 2.0)


# ============================================================================= all codecs


@st.composite
def any_case(draw):
    """(weight, spec) for every codec and parameter family, incl. composites."""
    which = draw(st.sampled_from(["int", "binary", "ternary", "codebook", "dense", "nm", "kronecker"]))
    if which == "kronecker":
        return draw(kron_cases())
    w = draw(weights())
    cols = matrix_shape(w.shape)[1]
    if which == "int":
        spec = int_spec(draw, cols)
    elif which == "binary":
        spec = BinarySpec(group_size=group_size_for(draw, cols))
    elif which == "ternary":
        spec = TernarySpec(group_size=group_size_for(draw, cols), threshold=draw(st.floats(0, 2)))
    elif which == "codebook":
        spec = CodebookSpec(
            bits=draw(st.integers(1, 8)), group_rows=draw(st.one_of(st.none(), st.integers(1, 45))), iterations=3
        )
    elif which == "dense":
        spec = DenseSpec(dtype=draw(st.sampled_from(["float32", "float16", "bfloat16"])))
    else:
        n, m = draw(nm_pairs)
        values = draw(
            st.one_of(
                nm_value_specs(math.ceil(cols / m) * n),
                st.builds(CodebookSpec, bits=st.integers(1, 4), iterations=st.just(2)),
            )
        )
        spec = NMSpec(n=n, m=m, values=values)
    return w, spec


@PROPS
@given(any_case())
def test_layout_and_nbytes_match_encoded_tensors(case):
    w, spec = case
    enc = codecs.encode(t(w), spec)
    check_layout(enc, w.shape, spec)
    codecs.check_tensors(enc, w.shape, spec)
    dec = codecs.decode(enc, spec, w.shape)
    assert dec.dtype == torch.float32 and tuple(dec.shape) == w.shape
    assert torch.isfinite(dec).all()


ZERO_SPECS = [
    IntSpec(bits=4),
    IntSpec(bits=2, group_size=None),
    IntSpec(bits=8, group_size=7),
    IntSpec(bits=4, symmetric=False),
    IntSpec(bits=1, symmetric=False, group_size=5),
    IntSpec(bits=3, symmetric=False, group_size=None, scale_dtype="bfloat16"),
    TernarySpec(),
    TernarySpec(group_size=3, threshold=0.0),
    TernarySpec(group_size=None, threshold=1.5),
    NMSpec(n=2, m=4, values=IntSpec(bits=4)),
    NMSpec(n=2, m=4, values=IntSpec(bits=4, group_size=5)),
    NMSpec(n=2, m=4, values=IntSpec(bits=4, symmetric=False)),
    NMSpec(n=1, m=4, values=IntSpec(bits=4)),
    NMSpec(n=3, m=8, values=TernarySpec()),
]


@FEW
@given(weights(kinds=["pruned24", "sparse", "zero_rows", "small_int"]), st.sampled_from(ZERO_SPECS))
def test_zero_preservation(w, spec):
    dec = codecs.decode(codecs.encode(t(w), spec), spec, w.shape).numpy()
    assert (dec[w == 0] == 0).all()


@pytest.mark.parametrize("spec", ZERO_SPECS, ids=lambda s: s.describe())
def test_zero_preservation_pruned_fixed(spec):
    rng = np.random.default_rng(1)
    w = prune_24(rng.standard_normal((16, 203)).astype(F32))
    w[3] = 0.0
    dec = codecs.decode(codecs.encode(t(w), spec), spec, w.shape).numpy()
    assert (dec[w == 0] == 0).all()


# ============================================================================= errors

ALL_SPECS = [
    IntSpec(bits=4),
    IntSpec(bits=3, symmetric=False),
    IntSpec(bits=1, zero_preserving=False),
    BinarySpec(),
    TernarySpec(),
    CodebookSpec(bits=2),
    DenseSpec(),
    DenseSpec(dtype="float32"),
    NMSpec(n=2, m=4),
    NMSpec(n=2, m=4, values=IntSpec(bits=4)),
    KroneckerSpec(a_shape=(2, 2)),
    KroneckerSpec(a_shape=(1, 4), factors=IntSpec(bits=8)),
]
SPEC_IDS = [s.describe() for s in ALL_SPECS]


@pytest.mark.parametrize("spec", ALL_SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weight_raises(spec, bad):
    w = torch.randn(4, 8)
    w[1, 3] = bad
    with pytest.raises(CodecError):
        codecs.encode(w, spec)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("shape", [(0,), (0, 8), (4, 0), (2, 0, 3)])
def test_empty_weight_raises(spec, shape):
    with pytest.raises(CodecError):
        codecs.encode(torch.zeros(shape), spec)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=SPEC_IDS)
def test_integer_weight_raises(spec):
    with pytest.raises(CodecError):
        codecs.encode(torch.ones(4, 8, dtype=torch.int32), spec)


@pytest.mark.parametrize("spec", ALL_SPECS, ids=SPEC_IDS)
def test_decode_checks_layout(spec):
    shape = (4, 8)
    enc = codecs.encode(torch.randn(shape), spec)
    codecs.decode(enc, spec, shape)
    for key in enc:
        missing = {k: v for k, v in enc.items() if k != key}
        with pytest.raises(CodecError):
            codecs.decode(missing, spec, shape)
        v = enc[key]
        with pytest.raises(CodecError):  # one element too many
            codecs.decode(dict(enc, **{key: torch.cat([v.reshape(-1), v.reshape(-1)[:1]])}), spec, shape)
        with pytest.raises(CodecError):  # right numel, wrong shape
            codecs.decode(dict(enc, **{key: v.reshape(1, -1) if v.dim() != 2 else v.reshape(-1)}), spec, shape)
        wrong = torch.float64 if v.dtype != torch.float64 else torch.float32
        with pytest.raises(CodecError):  # wrong dtype
            codecs.decode(dict(enc, **{key: v.to(wrong)}), spec, shape)
    with pytest.raises(CodecError):
        codecs.decode(dict(enc, extra=torch.zeros(1)), spec, shape)
    with pytest.raises(CodecError):  # tensors of another shape
        codecs.decode(enc, spec, (8, 8))


def test_spec_validation():
    for kwargs in ({"n": 4, "m": 4}, {"n": 5, "m": 4}, {"n": 0, "m": 4}, {"n": 2, "m": 17}, {"n": 16, "m": 16}):
        with pytest.raises(ValidationError):
            NMSpec(**kwargs)
    NMSpec(n=15, m=16)
    NMSpec(n=1, m=2)
    for bits in (0, 9, -1, 16):
        with pytest.raises(ValidationError):
            IntSpec(bits=bits)
        with pytest.raises(ValidationError):
            IntSpec(bits=bits, symmetric=False)
        with pytest.raises(ValidationError):
            CodebookSpec(bits=bits)
    with pytest.raises(ValidationError):
        IntSpec(bits=1)  # symmetric zero-preserving needs bits >= 2
    with pytest.raises(ValidationError):
        IntSpec(bits=1, symmetric=True, zero_preserving=True)
    with pytest.raises(ValidationError):
        IntSpec(bits=4, symmetric=False, zero_preserving=False)
    with pytest.raises(ValidationError):
        IntSpec(bits=4, group_size=0)
    with pytest.raises(ValidationError):
        TernarySpec(threshold=-0.1)
    with pytest.raises(ValidationError):
        KroneckerSpec(a_shape=(0, 2))
    with pytest.raises(ValidationError):
        KroneckerSpec(a_shape=(2, 2), rank=0)
    with pytest.raises(ValidationError):
        NMSpec(n=2, m=4, values=NMSpec(n=1, m=2))  # N:M values cannot nest
    IntSpec(bits=1, symmetric=False)
    IntSpec(bits=1, zero_preserving=False)
    IntSpec(bits=8)


def test_group_larger_than_the_row_costs_no_more_than_one_group_per_row():
    w = torch.randn(64, 3)
    spec = IntSpec(bits=4, group_size=10**6)
    enc = codecs.encode(w, spec)
    assert enc["scale"].shape == (64, 1)
    assert torch.equal(
        codecs.decode(enc, spec, w.shape),
        codecs.decode(codecs.encode(w, IntSpec(bits=4, group_size=None)), IntSpec(bits=4, group_size=None), w.shape),
    )


def test_dense_encode_never_aliases_the_input():
    w = torch.randn(4, 4)
    enc = codecs.encode(w, DenseSpec(dtype="float32"))
    enc["values"][0, 0] = 123.0
    assert w[0, 0] != 123.0


# ============================================================================= row lookups (embeddings)


@st.composite
def any_codec(draw, cols: int):
    """Any codec that can store a (rows, cols) matrix, N:M of every value codec included."""
    kind = draw(st.sampled_from(["int", "binary", "ternary", "codebook", "dense", "nm"]))
    if kind == "int":
        return int_spec(draw, cols)
    if kind == "codebook":
        return CodebookSpec(
            bits=draw(st.integers(1, 4)), group_rows=draw(st.one_of(st.none(), st.integers(1, 5))), iterations=3
        )
    if kind == "nm":
        n, m = draw(st.one_of(st.just((2, 4)), nm_pairs))
        return NMSpec(n=n, m=m, values=draw(nm_value_specs(math.ceil(cols / m) * n)))
    if kind == "dense":
        return DenseSpec(dtype=draw(st.sampled_from(["float32", "float16", "bfloat16"])))
    group = group_size_for(draw, cols)
    if kind == "binary":
        return BinarySpec(group_size=group)
    return TernarySpec(group_size=group, threshold=draw(st.floats(0.0, 2.0)))


@PROPS
@given(st.data())
def test_decode_rows_equals_the_rows_of_decode(data):
    """An embedding lookup decodes only its rows, whatever the codec, and gets exactly what a full decode gives;
    rows that start mid-byte (3-bit codes, trits, N:M codes) included."""
    rows = data.draw(st.integers(1, 9))
    cols = data.draw(st.integers(1, 40))
    w = make_weight((rows, cols), data.draw(st.integers(0, 2**32 - 1)), data.draw(st.sampled_from(KINDS)), dyadic=True)
    spec = data.draw(any_codec(cols))
    try:
        enc = codecs.encode(t(w), spec)
    except CodecError:  # a scale or value beyond its storage dtype
        return
    picked = torch.tensor(data.draw(st.lists(st.integers(0, rows - 1), min_size=1, max_size=12)))
    full = codecs.decode(enc, spec, (rows, cols))
    assert torch.equal(codecs.decode_rows(enc, spec, (rows, cols), picked), full[picked])


def test_decode_rows_reads_only_the_rows_asked_for(monkeypatch):
    """No full decode behind a lookup: each codec's decode_rows is served without calling its decode."""
    from zoo.formats.codecs import registered

    w = torch.randn(50, 36)
    for codec in registered().values():
        monkeypatch.setattr(type(codec), "decode", lambda *a, **k: pytest.fail("decode_rows decoded everything"))
    for spec in [
        IntSpec(bits=3, group_size=12),
        BinarySpec(group_size=9),
        TernarySpec(group_size=12),
        CodebookSpec(bits=2, group_rows=1),
        NMSpec(n=2, m=4, values=IntSpec(bits=4, group_size=6)),
    ]:
        enc = codecs.encode(w, spec)
        assert codecs.decode_rows(enc, spec, (50, 36), torch.tensor([3, 49, 3])).shape == (3, 36)


ROW_LOCAL = [  # (spec, takes given scales)
    (IntSpec(bits=8, group_size=None), True),
    (IntSpec(bits=3, group_size=16), True),
    (IntSpec(bits=2, group_size=16, symmetric=False), False),
    (BinarySpec(group_size=16), False),
    (TernarySpec(group_size=None), False),
    (CodebookSpec(bits=2, group_rows=1), False),
    (CodebookSpec(bits=1, group_rows=3), False),
    (NMSpec(n=2, m=4, values=IntSpec(bits=4, group_size=16)), True),
    (NMSpec(n=1, m=4, values=IntSpec(bits=8, group_size=None)), True),
]


@pytest.mark.parametrize(
    ("spec", "scaled"), ROW_LOCAL, ids=lambda s: s.describe() if hasattr(s, "describe") else str(s)
)
def test_a_large_matrix_encoded_in_row_blocks_gives_the_same_tensors(monkeypatch, spec, scaled):
    """Large tables are encoded a block of rows at a time; the joined tensors must be the whole matrix's."""
    w = torch.randn(203, 48, generator=torch.Generator().manual_seed(3))
    scale = codecs.encode(w, spec)["scale"].float() * 1.5 if scaled else None
    whole = codecs.encode(w, spec, scale=scale)
    calls = []
    one = codecs._encode
    monkeypatch.setattr(codecs, "_encode", lambda *a: calls.append(a[0].shape[0]) or one(*a))
    monkeypatch.setattr(codecs, "ROW_BLOCK_VALUES", 40 * 48)
    blocks = codecs.encode(w, spec, scale=scale)
    unit = codecs.codec_for(spec).row_unit(spec)  # blocks of whole bytes (and whole codebooks): 40 rows, or 24
    step = max(unit, 40 // unit * unit)
    expected = [step] * (203 // step) + [203 % step]
    if spec.codec == "nm":  # each block of rows, then its kept values through the value codec
        expected = [rows for rows in expected for _ in range(2)]
    assert calls == expected
    assert whole.keys() == blocks.keys()
    assert all(torch.equal(whole[k], blocks[k]) for k in whole)


def _lloyd(row: np.ndarray, k: int, iterations: int) -> np.ndarray:
    """Plain 1-D Lloyd k-means, the reference: from the same evenly spaced quantiles, every value to its nearest
    centroid (float64 distances, ties to the lower), each centroid the float64 mean of its values (kept when it
    has none), float32 like the codec's, stopping when nothing changes."""
    x = np.sort(row.astype(F32))
    n = len(x)
    c = x[np.minimum(((np.arange(k) + 0.5) / k * n).astype(np.int64), n - 1)].copy()
    for _ in range(iterations):
        assign = np.abs(x[:, None].astype(np.float64) - c[None, :].astype(np.float64)).argmin(axis=1)
        counts = np.bincount(assign, minlength=k)
        sums = np.bincount(assign, weights=x.astype(np.float64), minlength=k)
        updated = np.sort(np.where(counts > 0, sums / np.maximum(counts, 1), c).astype(F32))
        if np.array_equal(updated, c):
            break
        c = updated
    return c


@pytest.mark.parametrize(("rows", "n", "k"), [(1, 60_000, 16), (6, 3_072, 16), (4, 700, 256), (3, 5, 4)])
def test_kmeans_centroids_match_plain_lloyd_iterations(rows, n, k):
    """The run sums come from block totals and a window, not a float64 prefix sum the size of the table (188 MB
    for BERT-base's word embeddings): the centroids are still plain k-means's."""
    from zoo.formats.codecs.codebook import kmeans_1d

    g = torch.Generator().manual_seed(rows * n + k)
    x = torch.randn(rows, n, generator=g) * torch.rand(rows, 1, generator=g) + torch.randn(rows, 1, generator=g)
    got = kmeans_1d(x, k, 30).numpy()
    for r in range(rows):
        want = _lloyd(x[r].numpy(), k, 30)
        scale = float(np.abs(x[r].numpy()).max())
        np.testing.assert_allclose(got[r], want, rtol=0, atol=1e-6 * scale)


@pytest.mark.parametrize(("rows", "n", "k"), [(1, 100_000, 16), (5, 3_072, 256), (2, 7, 2), (1, 1, 2)])
def test_kmeans_run_sums_are_float64_prefix_sums_without_one(rows, n, k):
    from zoo.formats.codecs.codebook import _RunSums

    g = torch.Generator().manual_seed(n)
    x = torch.randn(rows, n, generator=g).sort(dim=1).values
    runs = _RunSums(x, k)
    positions = torch.cat(
        [
            torch.zeros(rows, 1, dtype=torch.int64),
            torch.full((rows, 1), n),
            torch.randint(0, n + 1, (rows, 40), generator=g),
        ],
        dim=1,
    )
    want = np.concatenate([np.zeros((rows, 1)), np.cumsum(x.numpy().astype(np.float64), axis=1)], axis=1)
    np.testing.assert_allclose(
        runs.before(positions).numpy(), np.take_along_axis(want, positions.numpy(), 1), rtol=1e-12, atol=1e-9
    )
    # float64 kept: ~sqrt(n k) totals per row, not n + 1 (a long row: 1,266 for 100,000 values)
    assert runs.totals.numel() <= rows * (2 * math.isqrt(n * k) + 2)


@pytest.mark.parametrize("spec", [CodebookSpec(bits=4), CodebookSpec(bits=2, group_rows=1)], ids=lambda s: s.describe())
def test_kmeans_walking_a_table_in_pieces_gives_the_same_tensors(monkeypatch, spec):
    """k-means and the nearest-centroid search take a long row a piece at a time; nothing may change."""
    from zoo.formats.codecs import codebook

    w = torch.randn(60, 50, generator=torch.Generator().manual_seed(5)) * torch.rand(
        60, 1, generator=torch.Generator().manual_seed(6)
    )
    whole = codecs.encode(w, spec)
    monkeypatch.setattr(codebook, "COLUMNS", 7)
    pieces = codecs.encode(w, spec)
    assert all(torch.equal(whole[k], pieces[k]) for k in whole)
