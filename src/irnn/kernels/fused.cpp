// Fused Elman recurrence for CPU: forward and backward through time.
//
//   forward:  h_t = f(z_t),  z_t = x_t W_ih^T + b + h_{t-1} W_hh^T        (t = 0..T-1)
//   backward: d_t = (gy_t + g_t) * f'(y_t),  g_{t-1} = d_t W_hh,  g_{T-1} = dL/dh_last
//             dW_hh += d_t^T h_{t-1},  dW_ih += d_t^T x_t,  db += sum_rows d_t,  dx_t = d_t W_ih
//
// Plain C++17 with GCC/Clang vector extensions; no torch headers, so it builds in seconds.
// Python (fused.py) compiles it on first use with -O3 -march=native -fopenmp and calls the
// extern "C" entry points at the bottom through ctypes. All arrays are dense row-major and
// owned by the caller; the kernel allocates only small per-thread scratch (a few row slices
// and one H x H partial weight gradient), never anything of size T x B x H.
//
// Threading: batch rows are independent, so each OpenMP thread takes one contiguous slice of
// rows and runs its slice through the WHOLE time loop: there is no barrier per step, only the
// fork/join of one parallel region per call.
//
// Determinism: every output row is computed by the same sequence of floating-point operations
// whichever thread owns it and however rows are blocked, so y, h_last, dL/dh0, dx and the
// projection gradient are bitwise identical for any thread count. Weight and bias gradients
// are sums over rows: each thread accumulates its slice into a private partial and the
// partials are added in thread order, so they are bitwise reproducible for a fixed thread
// count (and differ in the last bits between thread counts).

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

// Bumped whenever the C ABI below changes; fused.py refuses a library with another value.
#define IRNN_FUSED_ABI 1

// Activation codes: keep in step with KERNEL_CODES in irnn/models/activations.py.
enum { ACT_IDENTITY = 0, ACT_RELU = 1, ACT_TANH = 2, ACT_ELU = 3, ACT_LEAKY = 4, ACT_SELU = 5, ACT_SOFTPLUS = 6 };

namespace {

#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX2__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif
constexpr std::size_t kAlign = 64;

template <typename T> struct Simd;
template <> struct Simd<float> {
    typedef float V __attribute__((vector_size(kVecBytes), __may_alias__));
    typedef int32_t I __attribute__((vector_size(kVecBytes), __may_alias__));
};
template <> struct Simd<double> {
    typedef double V __attribute__((vector_size(kVecBytes), __may_alias__));
    typedef int64_t I __attribute__((vector_size(kVecBytes), __may_alias__));
};

template <typename T> using VecT = typename Simd<T>::V;
template <typename T> using IVecT = typename Simd<T>::I;
template <typename T> constexpr int lanes() { return kVecBytes / int(sizeof(T)); }

// Row-block and column-tile limits of the register-blocked micro-kernel: up to MR rows x NR
// vectors of accumulators, plus NR registers for one row of the packed B operand and one for
// the broadcast A element: 6 x 4 + 4 + 1 = 29 of AVX-512's 32 registers, 4 x 3 + 3 + 1 = 16
// of AVX2's (and SSE's) 16. Each B vector load feeds MR FMAs and each broadcast NR, so the
// loop is FMA-bound out of L1/L2.
constexpr int MR_MAX = 6, NR_MAX = 4;  // instantiated micro-kernel shapes
constexpr int MR = kVecBytes == 64 ? 6 : 4;
constexpr int NR = kVecBytes == 64 ? 4 : 3;
static_assert(MR <= MR_MAX && NR <= NR_MAX, "micro-kernel table too small");

inline std::ptrdiff_t round_up(std::ptrdiff_t n, std::ptrdiff_t m) { return (n + m - 1) / m * m; }

// ---------------------------------------------------------------------------------------
// Loads and stores. Packed buffers are 64-byte aligned with rows padded to a whole number of
// vectors; caller arrays (x, y, h0, ...) have rows of exactly H elements, so their last vector
// per row is partial and goes through a masked load/store (never touching memory past the row,
// which matters for the last row of an array).

// s - 0 rather than 0 + s: the latter turns -0.0 into +0.0 (and the sign masks need -0.0).
template <typename T> inline VecT<T> vsplat(T s) { return s - VecT<T>{}; }
template <typename T> inline VecT<T> vload(const T* p) { return *reinterpret_cast<const VecT<T>*>(p); }
template <typename T> inline void vstore(T* p, VecT<T> v) { *reinterpret_cast<VecT<T>*>(p) = v; }
template <typename T> inline VecT<T> vloadu(const T* p) { VecT<T> v; std::memcpy(&v, p, sizeof v); return v; }
template <typename T> inline void vstoreu(T* p, VecT<T> v) { std::memcpy(p, &v, sizeof v); }

// First n (0 < n <= lanes) elements; the rest are zero.
inline VecT<float> vload_n(const float* p, int n) {
    if (n == lanes<float>()) return vloadu(p);
#if defined(__AVX512F__)
    return (VecT<float>)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
#elif defined(__AVX2__)
    const IVecT<float> idx = {0, 1, 2, 3, 4, 5, 6, 7};
    return (VecT<float>)_mm256_maskload_ps(p, (__m256i)(idx < n));
#else
    VecT<float> v = {};
    for (int j = 0; j < n; ++j) v[j] = p[j];
    return v;
#endif
}
inline VecT<double> vload_n(const double* p, int n) {
    if (n == lanes<double>()) return vloadu(p);
#if defined(__AVX512F__)
    return (VecT<double>)_mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1u), p);
#elif defined(__AVX2__)
    const IVecT<double> idx = {0, 1, 2, 3};
    return (VecT<double>)_mm256_maskload_pd(p, (__m256i)(idx < (int64_t)n));
#else
    VecT<double> v = {};
    for (int j = 0; j < n; ++j) v[j] = p[j];
    return v;
#endif
}
inline void vstore_n(float* p, VecT<float> v, int n) {
    if (n == lanes<float>()) return vstoreu(p, v);
#if defined(__AVX512F__)
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1u), (__m512)v);
#elif defined(__AVX2__)
    const IVecT<float> idx = {0, 1, 2, 3, 4, 5, 6, 7};
    _mm256_maskstore_ps(p, (__m256i)(idx < n), (__m256)v);
#else
    for (int j = 0; j < n; ++j) p[j] = v[j];
#endif
}
inline void vstore_n(double* p, VecT<double> v, int n) {
    if (n == lanes<double>()) return vstoreu(p, v);
#if defined(__AVX512F__)
    _mm512_mask_storeu_pd(p, (__mmask8)((1u << n) - 1u), (__m512d)v);
#elif defined(__AVX2__)
    const IVecT<double> idx = {0, 1, 2, 3};
    _mm256_maskstore_pd(p, (__m256i)(idx < (int64_t)n), (__m256d)v);
#else
    for (int j = 0; j < n; ++j) p[j] = v[j];
#endif
}

// ---------------------------------------------------------------------------------------
// Vector math. No libm calls in the hot loop (without -ffast-math GCC will not vectorise
// them), so exp/expm1/log1p are implemented here: Cody-Waite range reduction plus a
// polynomial, accurate to a few ulp, which is what the 1e-5 agreement with torch needs.

template <typename T> struct MathConst;
template <> struct MathConst<float> {
    static constexpr float lo = -88.0f, hi = 88.0f;  // 2^n stays a normal number
    static constexpr float log2e = 1.44269504088896341f;
    static constexpr float ln2hi = 0.693359375f, ln2lo = -2.12194440e-4f;  // ln2hi has 9 bits
    static constexpr float ln2 = 0.693147180559945309f;
    static constexpr float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    static constexpr float sqrt2 = 1.41421356237309505f;
    // 1/k! for k = 2..8: Taylor series of expm1 on |r| <= ln2/2, truncation error < 2e-8.
    static constexpr int nexp = 7;
    static constexpr float cexp[nexp] = {1.f / 2, 1.f / 6, 1.f / 24, 1.f / 120, 1.f / 720, 1.f / 5040, 1.f / 40320};
    // 1/(2k+1) for k = 1..5: atanh series of log1p in s = f/(2+f), |s| <= 0.172.
    static constexpr int nlog = 5;
    static constexpr float clog[nlog] = {1.f / 3, 1.f / 5, 1.f / 7, 1.f / 9, 1.f / 11};
};
template <> struct MathConst<double> {
    static constexpr double lo = -708.0, hi = 709.0;
    static constexpr double log2e = 1.44269504088896340736;
    static constexpr double ln2hi = 6.93147180369123816490e-01, ln2lo = 1.90821492927058770002e-10;
    static constexpr double ln2 = 0.693147180559945309417;
    static constexpr double shifter = 6755399441055744.0;  // 1.5 * 2^52
    static constexpr double sqrt2 = 1.41421356237309504880;
    static constexpr int nexp = 13;  // 1/k!, k = 2..14: truncation error < 2e-17
    static constexpr double cexp[nexp] = {1. / 2,         1. / 6,          1. / 24,          1. / 120,
                                          1. / 720,       1. / 5040,       1. / 40320,       1. / 362880,
                                          1. / 3628800,   1. / 39916800,   1. / 479001600,   1. / 6227020800,
                                          1. / 87178291200};
    static constexpr int nlog = 10;  // 1/(2k+1), k = 1..10
    static constexpr double clog[nlog] = {1. / 3,  1. / 5,  1. / 7,  1. / 9,  1. / 11,
                                          1. / 13, 1. / 15, 1. / 17, 1. / 19, 1. / 21};
};
template <typename T> struct ExpBits;
template <> struct ExpBits<float> { static constexpr int32_t bias = 127, mant = 23; };
template <> struct ExpBits<double> { static constexpr int64_t bias = 1023, mant = 52; };

// exp(x) = s * (1 + p) and expm1(x) = s * p + (s - 1) with s = 2^n, p = expm1(r), |r| <= ln2/2.
// Computing expm1 this way keeps full relative accuracy near 0 (s = 1 there, no cancellation).
template <typename T>
inline void exp_parts(VecT<T> x, VecT<T>& p, VecT<T>& s) {
    typedef MathConst<T> C;
    typedef VecT<T> V;
    typedef IVecT<T> I;
    x = x < C::lo ? vsplat<T>(C::lo) : x;  // comparisons keep NaN, which then propagates
    x = x > C::hi ? vsplat<T>(C::hi) : x;
    const V shift = vsplat<T>(C::shifter);
    V tn = x * C::log2e + shift;  // low mantissa bits of tn now hold n = round(x / ln2)
    V n = tn - shift;
    V r = x - n * C::ln2hi;
    r = r - n * C::ln2lo;
    V q = vsplat<T>(C::cexp[C::nexp - 1]);
    for (int k = C::nexp - 2; k >= 0; --k) q = q * r + C::cexp[k];
    p = r + (r * r) * q;
    I ni = (I)tn - (I)shift;  // the integer n, read straight from the bits
    s = (V)((ni + ExpBits<T>::bias) << ExpBits<T>::mant);
}

template <typename T> inline VecT<T> vexpm1(VecT<T> x) {
    VecT<T> p, s;
    exp_parts<T>(x, p, s);
    return s * p + (s - (T)1);
}

template <typename T> inline VecT<T> vexp(VecT<T> x) {
    VecT<T> p, s;
    exp_parts<T>(x, p, s);
    return s * p + s;
}

// log1p(u) for u in [0, 1] (all softplus needs): v = 1 + u = 2^k m, m in [sqrt(1/2), sqrt(2)),
// log(m) = 2 atanh(f / (2 + f)) with f = m - 1 exact, plus the rounding error of 1 + u.
template <typename T> inline VecT<T> vlog1p01(VecT<T> u) {
    typedef MathConst<T> C;
    typedef VecT<T> V;
    const V one = vsplat<T>(1), zero = V{};
    V v = u + one;
    V c = (u - (v - one)) / v;
    V big = v > C::sqrt2 ? one : zero;  // k in {0, 1}
    V m = v - big * (v * (T)0.5);       // v / 2 where k = 1 (exact)
    V f = m - one;
    V sr = f / (f + (T)2);
    V z = sr * sr;
    V q = vsplat<T>(C::clog[C::nlog - 1]);
    for (int k = C::nlog - 2; k >= 0; --k) q = q * z + C::clog[k];
    V lg = (sr + sr) + (sr + sr) * z * q;
    return big * C::ln2hi + (lg + (c + big * C::ln2lo));
}

// ---------------------------------------------------------------------------------------
// Activations: forward on the pre-activation, derivative written in terms of the output y
// (every built-in activation is monotone, so y determines f'). The derivative table is the
// one in activations.py.

struct ActParams {
    double param;
};

template <typename T, int ACT> struct Act;

template <typename T> struct Act<T, ACT_IDENTITY> {
    static VecT<T> f(VecT<T> z, T) { return z; }
    static VecT<T> df(VecT<T>, T) { return vsplat<T>(1); }
};
template <typename T> struct Act<T, ACT_RELU> {
    static VecT<T> f(VecT<T> z, T) { return z < 0 ? VecT<T>{} : z; }  // NaN passes through
    static VecT<T> df(VecT<T> y, T) { return y > 0 ? vsplat<T>(1) : VecT<T>{}; }
};
template <typename T> struct Act<T, ACT_TANH> {
    static VecT<T> f(VecT<T> z, T) {
        typedef IVecT<T> I;
        const I sign = (I)vsplat<T>(-0.0);
        VecT<T> a = (VecT<T>)((I)z & ~sign);
        VecT<T> e = vexpm1<T>(a * (T)-2);    // in (-1, 0]
        VecT<T> t = -e / (e + (T)2);          // tanh(|z|) without cancellation near 0
        return (VecT<T>)((I)t | ((I)z & sign));  // odd symmetry, keeps -0.0
    }
    static VecT<T> df(VecT<T> y, T) { return (T)1 - y * y; }
};
template <typename T> struct Act<T, ACT_ELU> {  // param = alpha > 0
    static VecT<T> f(VecT<T> z, T alpha) {
        VecT<T> neg = z > 0 ? VecT<T>{} : z;  // expm1 only ever sees z <= 0 (or NaN)
        return z > 0 ? z : alpha * vexpm1<T>(neg);
    }
    static VecT<T> df(VecT<T> y, T alpha) { return y > 0 ? vsplat<T>(1) : y + alpha; }
};
template <typename T> struct Act<T, ACT_LEAKY> {  // param = slope >= 0
    static VecT<T> f(VecT<T> z, T slope) { return z > 0 ? z : z * slope; }
    static VecT<T> df(VecT<T> y, T slope) { return y > 0 ? vsplat<T>(1) : vsplat<T>(slope); }
};
template <typename T> struct Act<T, ACT_SELU> {
    static constexpr T alpha = (T)1.6732632423543772848170429916717;
    static constexpr T scale = (T)1.0507009873554804934193349852946;
    static VecT<T> f(VecT<T> z, T) {
        VecT<T> neg = z > 0 ? VecT<T>{} : z;
        return z > 0 ? z * scale : (scale * alpha) * vexpm1<T>(neg);
    }
    static VecT<T> df(VecT<T> y, T) { return y > 0 ? vsplat<T>(scale) : y + scale * alpha; }
};
template <typename T> struct Act<T, ACT_SOFTPLUS> {  // torch's beta = 1, threshold = 20
    static VecT<T> f(VecT<T> z, T) {
        typedef IVecT<T> I;
        const I sign = (I)vsplat<T>(-0.0);
        VecT<T> a = (VecT<T>)((I)z | sign);  // -|z|
        VecT<T> pos = z > 0 ? z : VecT<T>{};
        VecT<T> sp = pos + vlog1p01<T>(vexp<T>(a));  // log(1 + e^z) = max(z, 0) + log1p(e^-|z|)
        return z > (T)20 ? z : sp;
    }
    static VecT<T> df(VecT<T> y, T) { return -vexpm1<T>(-y); }  // sigmoid(z) = 1 - e^-y
};

// Epilogues, one pair per activation, selected once per call through a function pointer so
// that the (large) time-loop drivers are compiled once per dtype, not once per activation.
//   forward:  y[r, :H] = f(z[r, :])          z padded (ldz = Hp), y rows of H (stride H)
//   backward: d[r, :]  = (z[r, :] + gy[r, :H]) * f'(yp[r, :])   all padded except gy
template <typename T> using FwdEpi = void (*)(int, int, std::ptrdiff_t, const T*, T*, T);
template <typename T> using BwdEpi = void (*)(int, int, std::ptrdiff_t, const T*, const T*, const T*, T*, T);

template <typename T, int ACT>
void forward_epilogue(int R, int H, std::ptrdiff_t Hp, const T* Z, T* y, T param) {
    constexpr int L = lanes<T>();
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < H; c += L)
            vstore_n(y + std::ptrdiff_t(r) * H + c, Act<T, ACT>::f(vload<T>(Z + r * Hp + c), param),
                     std::min(L, H - c));
}

// Padding columns of d come out 0: z, gy (masked load) and the padded copy of y are 0 there.
template <typename T, int ACT>
void backward_epilogue(int R, int H, std::ptrdiff_t Hp, const T* Z, const T* gy, const T* Yp, T* D, T param) {
    constexpr int L = lanes<T>();
    for (int r = 0; r < R; ++r)
        for (int c = 0; c < Hp; c += L) {
            VecT<T> g = vload<T>(Z + r * Hp + c);
            if (gy) g += vload_n(gy + std::ptrdiff_t(r) * H + c, std::min(L, H - int(c)));
            vstore<T>(D + r * Hp + c, g * Act<T, ACT>::df(vload<T>(Yp + r * Hp + c), param));
        }
}

template <typename T> bool epilogues(int act, FwdEpi<T>& fwd, BwdEpi<T>& bwd) {
    switch (act) {
#define IRNN_CASE(CODE) \
    case CODE: fwd = forward_epilogue<T, CODE>, bwd = backward_epilogue<T, CODE>; return true;
        IRNN_CASE(ACT_IDENTITY)
        IRNN_CASE(ACT_RELU)
        IRNN_CASE(ACT_TANH)
        IRNN_CASE(ACT_ELU)
        IRNN_CASE(ACT_LEAKY)
        IRNN_CASE(ACT_SELU)
        IRNN_CASE(ACT_SOFTPLUS)
#undef IRNN_CASE
    }
    return false;
}

// ---------------------------------------------------------------------------------------
// Register-blocked micro-kernel:  C[RB x NV*L] += A1 (RB x K1) B1 + A2 (RB x K2) B2.
//
// A is read one element at a time and broadcast, through two strides (sr between rows, sk
// between k), so one kernel serves h_{t-1} W^T (A row-major), d_t^T h_{t-1} (A transposed)
// and the input projection. B is a packed, padded, aligned buffer with rows of ldb elements.
// C is an aligned scratch tile; it is loaded into registers once, updated for all k, stored
// once. Two A/B pairs let the input projection ride along with the recurrence in one pass.
// Every output element sees the same fma chain in the same k order whatever RB/NV or thread,
// which is what makes results independent of the blocking and the thread count.

template <typename T, int RB, int NV>
__attribute__((always_inline)) inline void micro_pass(int K, const T* __restrict A, std::ptrdiff_t sr,
                                                      std::ptrdiff_t sk, const T* __restrict B, std::ptrdiff_t ldb,
                                                      VecT<T> (&acc)[RB][NV]) {
    constexpr int L = lanes<T>();
    const T* a[RB];
#pragma GCC unroll 8
    for (int i = 0; i < RB; ++i) a[i] = A + i * sr;
    std::ptrdiff_t off = 0;
    for (int k = 0; k < K; ++k) {
        VecT<T> b[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) b[v] = vload<T>(B + v * L);
#pragma GCC unroll 8
        for (int i = 0; i < RB; ++i) {
            const T ai = a[i][off];
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) acc[i][v] += ai * b[v];
        }
        off += sk;
        B += ldb;
    }
}

template <typename T, int RB, int NV>
void micro(int K1, const T* A1, std::ptrdiff_t sr1, std::ptrdiff_t sk1, const T* B1, int K2, const T* A2,
           std::ptrdiff_t sr2, std::ptrdiff_t sk2, const T* B2, std::ptrdiff_t ldb, T* C, std::ptrdiff_t ldc) {
    constexpr int L = lanes<T>();
    VecT<T> acc[RB][NV];
#pragma GCC unroll 8
    for (int i = 0; i < RB; ++i)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[i][v] = vload<T>(C + i * ldc + v * L);
    if (K1 > 0) micro_pass<T, RB, NV>(K1, A1, sr1, sk1, B1, ldb, acc);
    if (K2 > 0) micro_pass<T, RB, NV>(K2, A2, sr2, sk2, B2, ldb, acc);
#pragma GCC unroll 8
    for (int i = 0; i < RB; ++i)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) vstore<T>(C + i * ldc + v * L, acc[i][v]);
}

template <typename T>
using MicroFn = void (*)(int, const T*, std::ptrdiff_t, std::ptrdiff_t, const T*, int, const T*, std::ptrdiff_t,
                         std::ptrdiff_t, const T*, std::ptrdiff_t, T*, std::ptrdiff_t);

template <typename T, int RB> struct MicroRow {
    static constexpr MicroFn<T> fns[NR_MAX] = {micro<T, RB, 1>, micro<T, RB, 2>, micro<T, RB, 3>, micro<T, RB, 4>};
};
template <typename T> inline MicroFn<T> micro_fn(int rb, int nv) {  // 1 <= rb <= MR, 1 <= nv <= NR
    static constexpr const MicroFn<T>* rows[MR_MAX] = {MicroRow<T, 1>::fns, MicroRow<T, 2>::fns,
                                                      MicroRow<T, 3>::fns, MicroRow<T, 4>::fns,
                                                      MicroRow<T, 5>::fns, MicroRow<T, 6>::fns};
    return rows[rb - 1][nv - 1];
}

// A split of n items into ceil(n / max) nearly equal blocks (sizes differ by at most one),
// used for row blocks (max MR) and column tiles (max NR vectors): no thin remainder block.
struct Blocks {
    std::vector<int> start, size;
    Blocks(int n, int max) {
        int nb = (n + max - 1) / max, base = nb ? n / nb : 0, extra = nb ? n % nb : 0, s = 0;
        for (int b = 0; b < nb; ++b) {
            int sz = base + (b < extra ? 1 : 0);
            start.push_back(s);
            size.push_back(sz);
            s += sz;
        }
    }
};

// C[rows x cols] += A1 B1 + A2 B2 over row blocks x column tiles; columns are whole vectors
// (tiles in units of vectors). Column tiles are the outer loop so that one K x NR*L panel of
// B (25.6 KB for H = 100 float) stays in L1 while every row block streams past it.
template <typename T>
void gemm(const Blocks& rows, const Blocks& tiles, int K1, const T* A1, std::ptrdiff_t sr1, std::ptrdiff_t sk1,
          const T* B1, int K2, const T* A2, std::ptrdiff_t sr2, std::ptrdiff_t sk2, const T* B2, std::ptrdiff_t ldb, T* C,
          std::ptrdiff_t ldc) {
    constexpr int L = lanes<T>();
    for (std::size_t c = 0; c < tiles.start.size(); ++c) {
        const std::ptrdiff_t c0 = std::ptrdiff_t(tiles.start[c]) * L;
        for (std::size_t r = 0; r < rows.start.size(); ++r) {
            const std::ptrdiff_t i0 = rows.start[r];
            micro_fn<T>(rows.size[r], tiles.size[c])(K1, A1 + i0 * sr1, sr1, sk1, B1 + c0, K2, A2 + i0 * sr2, sr2,
                                                     sk2, B2 + c0, ldb, C + i0 * ldc + c0, ldc);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Small helpers.

struct Buf {  // 64-byte aligned, zero-filled scratch owned by one thread
    void* p = nullptr;
    Buf() = default;
    explicit Buf(std::size_t bytes) { alloc(bytes); }
    void alloc(std::size_t bytes) {
        bytes = std::size_t(round_up(std::ptrdiff_t(bytes ? bytes : 1), kAlign));
        p = std::aligned_alloc(kAlign, bytes);
        if (!p) throw std::bad_alloc();
        std::memset(p, 0, bytes);
    }
    ~Buf() { std::free(p); }
    Buf(const Buf&) = delete;
    Buf& operator=(const Buf&) = delete;
    template <typename T> T* as() const { return static_cast<T*>(p); }
};

// dst (rows x ldd, padded, aligned) <- src (rows x n, stride lds); padding columns zero.
template <typename T>
void copy_rows_padded(int rows, int n, const T* src, std::ptrdiff_t lds, T* dst, std::ptrdiff_t ldd) {
    constexpr int L = lanes<T>();
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < n; c += L) vstore<T>(dst + r * ldd + c, vload_n(src + r * lds + c, std::min(L, n - c)));
}

// dst (rows x n, stride ldd) <- src (padded, aligned).
template <typename T>
void copy_rows_unpadded(int rows, int n, const T* src, std::ptrdiff_t lds, T* dst, std::ptrdiff_t ldd) {
    constexpr int L = lanes<T>();
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < n; c += L) vstore_n(dst + r * ldd + c, vload<T>(src + r * lds + c), std::min(L, n - c));
}

// Threads for a call: at most one per batch row, and only as many as the work pays for. A
// parallel region costs microseconds on an idle machine but can cost a scheduler time slice
// when the cores are oversubscribed, so tiny calls (gradcheck, unit tests, B = 1 inference
// of short sequences) run on the calling thread. Per-row results do not depend on this choice.
constexpr double kMinFlopsPerThread = 4e6;  // ~40 us of micro-kernel time

inline int thread_count(int requested, std::int64_t rows, double flops) {
    std::int64_t by_work = std::int64_t(flops / kMinFlopsPerThread);
    std::int64_t n = std::max<std::int64_t>(1, std::min<std::int64_t>({std::int64_t(requested), rows, by_work}));
#ifndef _OPENMP
    n = 1;
#endif
    return int(n);
}

// Runs body(tid, nth) on up to `nthreads` threads. The runtime may grant fewer (OMP_DYNAMIC,
// nesting), so the body must split its work by the nth it is given. Exceptions (only
// std::bad_alloc from scratch allocation) must not escape an OpenMP region: they become an
// error flag.
template <typename F> int parallel(int nthreads, F&& body) {
    int failed = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(nthreads)
    {
        try {
            body(omp_get_thread_num(), omp_get_num_threads());
        } catch (...) {
#pragma omp atomic write
            failed = 1;
        }
    }
#else
    (void)nthreads;
    try {
        body(0, 1);
    } catch (...) {
        failed = 1;
    }
#endif
    return failed ? 2 : 0;
}

// ---------------------------------------------------------------------------------------
// Forward.

template <typename T> struct FwdArgs {
    std::int64_t T_, B, H, I;
    const T* x;     // (T, B, I) if w_ih else the projection (T, B, H)
    const T* w_ih;  // (H, I) or null
    const T* bias;  // (H) or null
    const T* w_hh;  // (H, H)
    const T* h0;    // (B, H)
    T* y;           // (T, B, H) or null: then only h_last is produced (ping-pong state)
    T* h_last;      // (B, H)
    T param;
};

template <typename T>
int forward(const FwdArgs<T>& a, FwdEpi<T> epilogue, int nthreads) {
    constexpr int L = lanes<T>();
    const int H = int(a.H), I = int(a.I);
    const std::int64_t B = a.B, TT = a.T_;
    const std::ptrdiff_t Hp = round_up(H, L);
    const bool fused_input = a.w_ih != nullptr;
    // Packed, zero-padded operands shared read-only by all threads (small: (H + I + 1) x Hp).
    Buf whhT, wihT, bias_p;
    try {
        whhT.alloc(sizeof(T) * H * Hp);
        wihT.alloc(sizeof(T) * std::max(I, 1) * Hp);
        bias_p.alloc(sizeof(T) * Hp);
    } catch (...) {
        return 2;
    }
    for (int k = 0; k < H; ++k)
        for (int j = 0; j < H; ++j) whhT.as<T>()[k * Hp + j] = a.w_hh[std::ptrdiff_t(j) * H + k];
    if (fused_input)
        for (int k = 0; k < I; ++k)
            for (int j = 0; j < H; ++j) wihT.as<T>()[k * Hp + j] = a.w_ih[std::ptrdiff_t(j) * I + k];
    if (a.bias)
        for (int j = 0; j < H; ++j) bias_p.as<T>()[j] = a.bias[j];
    const Blocks tiles(int(Hp / L), NR);

    const double flops = 2.0 * double(TT) * double(B) * H * (H + (fused_input ? I : 0));
    return parallel(thread_count(nthreads, B, flops), [&](int tid, int nth) {
        const std::int64_t r0 = B * tid / nth, r1 = B * (tid + 1) / nth;
        const int R = int(r1 - r0);
        if (R == 0) return;
        Buf z(sizeof(T) * R * Hp);                            // pre-activations of this slice
        Buf pp(a.y ? 0 : sizeof(T) * 2 * std::size_t(R) * H);  // ping-pong states if y is not kept
        T* Z = z.as<T>();
        const T* bp = bias_p.as<T>();
        const Blocks rows(R, MR);
        for (std::int64_t t = 0; t < TT; ++t) {
            const T* hprev = t == 0 ? a.h0 + r0 * H
                                    : (a.y ? a.y + ((t - 1) * B + r0) * H : pp.as<T>() + ((t - 1) & 1) * R * H);
            T* ycur = a.y ? a.y + (t * B + r0) * H : pp.as<T>() + (t & 1) * R * H;
            // z = bias (+ the precomputed projection), then += x_t W_ih^T + h_{t-1} W_hh^T
            if (fused_input) {
                for (int r = 0; r < R; ++r) std::memcpy(Z + r * Hp, bp, sizeof(T) * Hp);
            } else {
                const T* xp = a.x + (t * B + r0) * H;
                for (int r = 0; r < R; ++r)
                    for (int c = 0; c < H; c += L)
                        vstore<T>(Z + r * Hp + c, vload_n(xp + r * H + c, std::min(L, H - c)) + vload<T>(bp + c));
            }
            gemm<T>(rows, tiles, fused_input ? I : 0, a.x + (t * B + r0) * I, I, 1, wihT.as<T>(), H, hprev, H, 1,
                    whhT.as<T>(), Hp, Z, Hp);
            epilogue(R, H, Hp, Z, ycur, a.param);
        }
        const T* ylast = a.y ? a.y + ((TT - 1) * B + r0) * H : pp.as<T>() + ((TT - 1) & 1) * R * H;
        std::memcpy(a.h_last + r0 * H, ylast, sizeof(T) * R * H);
    });
}

// ---------------------------------------------------------------------------------------
// Backward over steps t0 <= t < t1 (callers may split time into chunks; g carries dL/dh
// across chunk boundaries).

template <typename T> struct BwdArgs {
    std::int64_t T_, B, H, I, t0, t1;
    const T* y;     // (T, B, H) stored outputs
    const T* h0;    // (B, H)
    const T* gy;    // (T, B, H) or null: gradient of the outputs
    const T* x;     // (T, B, I) or null: only for dW_ih in fused-input mode
    const T* w_ih;  // (H, I) or null: only for dx in fused-input mode
    const T* w_hh;  // (H, H)
    T* g;           // (B, H) in: dL/dh_{t1-1} beyond gy; out: dL/dh_{t0-1} (dL/dh0 for t0 = 0)
    T* dpre;        // (t1 - t0, B, H) or null: dL/dz for the caller's own projection gradients
    T* dx;          // (T, B, I) or null (fused-input mode)
    T* dw_hh;       // (H, H) or null, accumulated (+=)
    T* dw_ih;       // (H, I) or null, accumulated (+=), fused-input mode
    T* dbias;       // (H) or null, accumulated (+=)
    T param;
};

template <typename T>
int backward(const BwdArgs<T>& a, BwdEpi<T> epilogue, int nthreads) {
    constexpr int L = lanes<T>();
    const int H = int(a.H), I = int(a.I);
    const std::int64_t B = a.B, t0 = a.t0, t1 = a.t1;
    const std::ptrdiff_t Hp = round_up(H, L), Ip = round_up(std::max(I, 1), L);
    Buf whh_p, wih_p;
    try {
        whh_p.alloc(sizeof(T) * H * Hp);
        wih_p.alloc(sizeof(T) * H * Ip);
    } catch (...) {
        return 2;
    }
    for (int k = 0; k < H; ++k) std::memcpy(whh_p.as<T>() + k * Hp, a.w_hh + std::ptrdiff_t(k) * H, sizeof(T) * H);
    if (a.dx)
        for (int k = 0; k < H; ++k) std::memcpy(wih_p.as<T>() + k * Ip, a.w_ih + std::ptrdiff_t(k) * I, sizeof(T) * I);
    const Blocks tiles(int(Hp / L), NR), itiles(int(Ip / L), NR);

    const double flops =
        2.0 * double(t1 - t0) * double(B) * H * (H * (a.dw_hh ? 2 : 1) + (a.dx || a.dw_ih ? 2 * I : 0));
    const int nmax = thread_count(nthreads, B, flops);
    // Per-thread partial weight gradients, added in thread order after the parallel region.
    std::vector<T*> part_whh(nmax, nullptr), part_wih(nmax, nullptr), part_b(nmax, nullptr);
    std::vector<Buf> parts(3 * std::size_t(nmax));
    int nth_used = 1;

    int failed = parallel(nmax, [&](int tid, int nth) {
        if (tid == 0) nth_used = nth;
        const std::int64_t r0 = B * tid / nth, r1 = B * (tid + 1) / nth;
        const int R = int(r1 - r0);
        if (a.dw_hh) parts[3 * tid].alloc(sizeof(T) * H * Hp), part_whh[tid] = parts[3 * tid].as<T>();
        if (a.dw_ih) parts[3 * tid + 1].alloc(sizeof(T) * I * Hp), part_wih[tid] = parts[3 * tid + 1].as<T>();
        if (a.dbias) parts[3 * tid + 2].alloc(sizeof(T) * Hp), part_b[tid] = parts[3 * tid + 2].as<T>();
        if (R == 0) return;
        // d_t and y_t of this slice as padded copies (ping-pong), so that both the recurrence
        // GEMM and the weight-gradient GEMM read aligned, zero-padded rows.
        Buf dbuf(sizeof(T) * 2 * std::size_t(R) * Hp), ybuf(sizeof(T) * 2 * std::size_t(R) * Hp);
        Buf z(sizeof(T) * R * std::max(Hp, Ip));
        T* Z = z.as<T>();
        const Blocks rowsR(R, MR), rowsH(H, MR), rowsI(std::max(I, 1), MR);
        auto D = [&](std::int64_t t) { return dbuf.as<T>() + (t & 1) * R * Hp; };
        auto Y = [&](std::int64_t t) { return ybuf.as<T>() + (t & 1) * R * Hp; };  // t = -1 -> slot 1
        copy_rows_padded(R, H, a.y + ((t1 - 1) * B + r0) * H, H, Y(t1 - 1), Hp);
        for (std::int64_t t = t1 - 1; t >= t0; --t) {
            T* Dc = D(t);
            const T* Yc = Y(t);
            // h_{t-1} of this slice, for dW_hh now and for f'(y_{t-1}) next step
            copy_rows_padded(R, H, t > 0 ? a.y + ((t - 1) * B + r0) * H : a.h0 + r0 * H, H, Y(t - 1), Hp);
            // g = dL/dh_t from later steps: carried in at the chunk's last step, else d_{t+1} W_hh
            if (t == t1 - 1) {
                copy_rows_padded(R, H, a.g + r0 * H, H, Z, Hp);
            } else {
                std::memset(Z, 0, sizeof(T) * R * Hp);
                gemm<T>(rowsR, tiles, 0, nullptr, 0, 0, nullptr, H, D(t + 1), Hp, 1, whh_p.as<T>(), Hp, Z, Hp);
            }
            // d_t = (gy_t + g) * f'(y_t)
            epilogue(R, H, Hp, Z, a.gy ? a.gy + (t * B + r0) * H : nullptr, Yc, Dc, a.param);
            if (a.dpre) copy_rows_unpadded(R, H, Dc, Hp, a.dpre + ((t - t0) * B + r0) * H, H);
            // dW_hh += d_t^T h_{t-1}: A = d_t read transposed (rows are hidden units)
            if (a.dw_hh)
                gemm<T>(rowsH, tiles, 0, nullptr, 0, 0, nullptr, R, Dc, 1, Hp, Y(t - 1), Hp, part_whh[tid], Hp);
            if (a.dbias) {
                T* pb = part_b[tid];
                for (int c = 0; c < Hp; c += L) {
                    VecT<T> s = vload<T>(pb + c);
                    for (int r = 0; r < R; ++r) s += vload<T>(Dc + r * Hp + c);
                    vstore<T>(pb + c, s);
                }
            }
            // fused-input mode: dW_ih^T += x_t^T d_t and dx_t = d_t W_ih
            if (a.dw_ih)
                gemm<T>(rowsI, tiles, 0, nullptr, 0, 0, nullptr, R, a.x + (t * B + r0) * I, 1, I, Dc, Hp, part_wih[tid],
                        Hp);
            if (a.dx) {
                std::memset(Z, 0, sizeof(T) * R * Ip);
                gemm<T>(rowsR, itiles, 0, nullptr, 0, 0, nullptr, H, Dc, Hp, 1, wih_p.as<T>(), Ip, Z, Ip);
                copy_rows_unpadded(R, I, Z, Ip, a.dx + (t * B + r0) * I, I);
            }
        }
        // carry out: dL/dh_{t0-1} = d_{t0} W_hh
        std::memset(Z, 0, sizeof(T) * R * Hp);
        gemm<T>(rowsR, tiles, 0, nullptr, 0, 0, nullptr, H, D(t0), Hp, 1, whh_p.as<T>(), Hp, Z, Hp);
        copy_rows_unpadded(R, H, Z, Hp, a.g + r0 * H, H);
    });
    if (failed) return 2;
    // Reduce the partials in a fixed order (deterministic for a given thread count).
    if (a.dw_hh)
        for (int j = 0; j < H; ++j)
            for (int k = 0; k < H; ++k) {
                T s = part_whh[0][j * Hp + k];
                for (int th = 1; th < nth_used; ++th) s += part_whh[th][j * Hp + k];
                a.dw_hh[std::ptrdiff_t(j) * H + k] += s;
            }
    if (a.dw_ih)
        for (int j = 0; j < H; ++j)
            for (int i = 0; i < I; ++i) {
                T s = part_wih[0][i * Hp + j];
                for (int th = 1; th < nth_used; ++th) s += part_wih[th][i * Hp + j];
                a.dw_ih[std::ptrdiff_t(j) * I + i] += s;
            }
    if (a.dbias)
        for (int j = 0; j < H; ++j) {
            T s = part_b[0][j];
            for (int th = 1; th < nth_used; ++th) s += part_b[th][j];
            a.dbias[j] += s;
        }
    return 0;
}

template <typename T>
int forward_entry(std::int64_t T_, std::int64_t B, std::int64_t H, std::int64_t I, const T* x, const T* w_ih,
                  const T* bias, const T* w_hh, const T* h0, T* y, T* h_last, int act, double param, int nthreads) {
    if (T_ < 1 || B < 0 || H < 1 || I < 0 || !x || !w_hh || !h0 || !h_last || (w_ih && I < 1) || (!w_ih && I != H))
        return 1;
    if (B == 0) return 0;
    FwdEpi<T> fe;
    BwdEpi<T> be;
    if (!epilogues<T>(act, fe, be)) return 1;
    FwdArgs<T> a{T_, B, H, I, x, w_ih, bias, w_hh, h0, y, h_last, T(param)};
    try {
        return forward<T>(a, fe, nthreads);
    } catch (...) {
        return 2;
    }
}

template <typename T>
int backward_entry(std::int64_t T_, std::int64_t B, std::int64_t H, std::int64_t I, std::int64_t t0, std::int64_t t1,
                   const T* y, const T* h0, const T* gy, const T* x, const T* w_ih, const T* w_hh, T* g, T* dpre,
                   T* dx, T* dw_hh, T* dw_ih, T* dbias, int act, double param, int nthreads) {
    if (T_ < 1 || B < 0 || H < 1 || I < 0 || t0 < 0 || t1 > T_ || t0 >= t1 || !y || !h0 || !w_hh || !g ||
        ((dx || dw_ih) && (!x || !w_ih || I < 1)))
        return 1;
    if (B == 0) return 0;
    FwdEpi<T> fe;
    BwdEpi<T> be;
    if (!epilogues<T>(act, fe, be)) return 1;
    BwdArgs<T> a{T_, B, H, I, t0, t1, y, h0, gy, x, w_ih, w_hh, g, dpre, dx, dw_hh, dw_ih, dbias, T(param)};
    try {
        return backward<T>(a, be, nthreads);
    } catch (...) {
        return 2;
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------
// C ABI. Return value: 0 ok, 1 invalid arguments, 2 out of memory.

extern "C" {

int irnn_fused_abi(void) { return IRNN_FUSED_ABI; }
int irnn_fused_vector_bytes(void) { return kVecBytes; }
int irnn_fused_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

#define IRNN_FORWARD(NAME, T)                                                                                    \
    int NAME(std::int64_t T_, std::int64_t B, std::int64_t H, std::int64_t I, const T* x, const T* w_ih,         \
             const T* bias, const T* w_hh, const T* h0, T* y, T* h_last, int act, double param, int nthreads) { \
        return forward_entry<T>(T_, B, H, I, x, w_ih, bias, w_hh, h0, y, h_last, act, param, nthreads);         \
    }
IRNN_FORWARD(irnn_forward_f32, float)
IRNN_FORWARD(irnn_forward_f64, double)

#define IRNN_BACKWARD(NAME, T)                                                                                    \
    int NAME(std::int64_t T_, std::int64_t B, std::int64_t H, std::int64_t I, std::int64_t t0, std::int64_t t1, \
             const T* y, const T* h0, const T* gy, const T* x, const T* w_ih, const T* w_hh, T* g, T* dpre, T* dx, \
             T* dw_hh, T* dw_ih, T* dbias, int act, double param, int nthreads) {                                 \
        return backward_entry<T>(T_, B, H, I, t0, t1, y, h0, gy, x, w_ih, w_hh, g, dpre, dx, dw_hh, dw_ih, dbias, \
                                 act, param, nthreads);                                                            \
    }
IRNN_BACKWARD(irnn_backward_f32, float)
IRNN_BACKWARD(irnn_backward_f64, double)

}  // extern "C"
