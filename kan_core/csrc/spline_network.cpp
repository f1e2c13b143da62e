// A stack of cubic B-spline KAN layers, forward and backward, as two native CPU operators.
//
// Layer l maps a (n, in) to y (n, out):
//     features(a) = [silu(a); s·B_0(a); …; s·B_{K-1}(a)]          (n, K+1, in), row-major
//     W           = [w_base·mask; coef·mask/s]                    (out, K+1, in)
//     y           = features · Wᵀ + bias                          one GEMM
// with s = 6 on a uniform grid (the branch-free centred form 6·B(d) = relu(2-|d|)³ -
// 4·relu(1-|d|)³, exactly Cox–de Boor) and s = 1 on adaptive knots (de Boor's scheme for the
// four nonzero B-splines).
//
// The features never exist for the whole batch: rows are processed in chunks small enough that
// a chunk's features stay in the core's cache, and each chunk does its own small GEMM. Backward
// recomputes them chunk by chunk (cheaper than writing and re-reading megabytes), accumulates
// the weight gradient per thread and forms the input gradient in the same pass. The state kept
// for backward is small: per layer sigmoid(a) and the assembled weights, and the hidden
// activations.
//
// GEMMs call the BLAS that PyTorch itself links (MKL's sgemm_/dgemm_ on x86 wheels, found at
// load time), single-threaded (our own parallel chunk loop is the parallelism); without one they
// go through at::mm_out. The Python side (kan_core/native.py) registers fake kernels and autograd.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ops/sigmoid_cpu_dispatch.h>
#include <dlfcn.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <vector>

namespace {

using at::Tensor;

// ---- GEMM ---------------------------------------------------------------------------------

using sgemm_t = void (*)(const char*, const char*, const int*, const int*, const int*, const float*,
                         const float*, const int*, const float*, const int*, const float*, float*,
                         const int*);
using dgemm_t = void (*)(const char*, const char*, const int*, const int*, const int*,
                         const double*, const double*, const int*, const double*, const int*,
                         const double*, double*, const int*);

using set_threads_t = int (*)(int);

struct Blas {
  sgemm_t sgemm = nullptr;
  dgemm_t dgemm = nullptr;
  // MKL's C mkl_set_num_threads_local (the lower-case symbol is the Fortran one, int*)
  set_threads_t set_threads_local = nullptr;
  std::atomic<bool> use{true};  // false: at::mm_out even where the symbols exist (tests)
  Blas() {
    // the BLAS PyTorch was built with, if its symbols are visible (MKL in the x86 wheels)
    void* self = dlopen(nullptr, RTLD_NOW);
    void* lib = dlopen("libtorch_cpu.so", RTLD_NOW | RTLD_NOLOAD);
    for (void* h : {lib, self}) {
      if (h == nullptr) continue;
      if (sgemm == nullptr) sgemm = reinterpret_cast<sgemm_t>(dlsym(h, "sgemm_"));
      if (dgemm == nullptr) dgemm = reinterpret_cast<dgemm_t>(dlsym(h, "dgemm_"));
      if (set_threads_local == nullptr)
        set_threads_local = reinterpret_cast<set_threads_t>(dlsym(h, "MKL_Set_Num_Threads_Local"));
    }
  }
};

Blas& blas() {
  static Blas b;
  return b;
}

// For the life of this object the calling thread's BLAS calls run on that thread alone. The
// parallelism is ours (chunks); MKL already runs sequentially inside our parallel regions, but
// called from outside one (a batch too small to split) it would wake its own OpenMP team for
// every small GEMM, which then spins on the other cores.
class OneThreadBlas {
 public:
  OneThreadBlas() {
    if (blas().set_threads_local != nullptr) previous_ = blas().set_threads_local(1);
  }
  ~OneThreadBlas() {
    if (blas().set_threads_local != nullptr) blas().set_threads_local(previous_);
  }
  OneThreadBlas(const OneThreadBlas&) = delete;
  OneThreadBlas& operator=(const OneThreadBlas&) = delete;

 private:
  int previous_ = 0;  // 0: the thread follows the global setting again
};

// Row-major C (m, n) = alpha · op(A) · op(B) + beta · C, op(A) (m, k), op(B) (k, n); lda, ldb,
// ldc are row strides. A row-major matrix is the column-major transpose, so this is the
// column-major Cᵀ = op(B)ᵀ · op(A)ᵀ.
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* a,
          int64_t lda, const T* b, int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int64_t r = 0; r < m; ++r)
      for (int64_t s = 0; s < n; ++s) c[r * ldc + s] = beta == T(0) ? T(0) : beta * c[r * ldc + s];
    return;
  }
  const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
  const int M = static_cast<int>(n), N = static_cast<int>(m), K = static_cast<int>(k);
  const int LDA = static_cast<int>(ldb), LDB = static_cast<int>(lda), LDC = static_cast<int>(ldc);
  if constexpr (std::is_same_v<T, float>) {
    if (blas().sgemm != nullptr && blas().use) {
      blas().sgemm(&tb, &ta, &M, &N, &K, &alpha, b, &LDA, a, &LDB, &beta, c, &LDC);
      return;
    }
  } else {
    if (blas().dgemm != nullptr && blas().use) {
      blas().dgemm(&tb, &ta, &M, &N, &K, &alpha, b, &LDA, a, &LDB, &beta, c, &LDC);
      return;
    }
  }
  // no BLAS symbols: ATen's matmul on views of the same memory
  auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  Tensor A = trans_a ? at::from_blob(const_cast<T*>(a), {m, k}, {1, lda}, opts)
                     : at::from_blob(const_cast<T*>(a), {m, k}, {lda, 1}, opts);
  Tensor B = trans_b ? at::from_blob(const_cast<T*>(b), {k, n}, {1, ldb}, opts)
                     : at::from_blob(const_cast<T*>(b), {k, n}, {ldb, 1}, opts);
  Tensor C = at::from_blob(c, {m, n}, {ldc, 1}, opts);
  if (beta == T(0)) {
    at::mm_out(C, A, B);
  } else {
    C.addmm_(A, B, beta, alpha);
    return;
  }
  if (alpha != T(1)) C.mul_(alpha);
}

// ---- the cubic B-spline ---------------------------------------------------------------------

// relu as a select on values (if-converted and vectorised; std::max's references are not)
template <typename T>
inline T relu(T v) {
  return v > T(0) ? v : T(0);
}

// 6·B(d) for the uniform cubic B-spline centred at 0 (d in knot spacings)
template <typename T>
inline T b6(T d) {
  const T a = std::abs(d);
  const T r1 = relu(T(1) - a), r2 = relu(T(2) - a);
  return r2 * r2 * r2 - T(4) * (r1 * r1 * r1);
}

// d(6·B)/dd divided by -3
template <typename T>
inline T db6_over_minus3(T d) {
  const T a = std::abs(d);
  const T r1 = relu(T(1) - a), r2 = relu(T(2) - a);
  return std::copysign(r2 * r2 - T(4) * (r1 * r1), d);
}

// silu'(a) from a and s = sigmoid(a)
template <typename T>
inline T silu_grad(T a, T s) {
  return s * (T(1) + a * (T(1) - s));
}

// j with t[j] <= x < t[j+1] (t[j] < t[j+1]), or -1 outside [t_0, t_last): Cox–de Boor's
// half-open intervals
template <typename T>
inline int64_t span(const T* t, int64_t n_knots, T x) {
  if (!(x >= t[0] && x < t[n_knots - 1])) return -1;
  int64_t j = 0;
  while (j < n_knots - 2 && t[j + 1] <= x) ++j;
  return j;
}

// out[r], r = 0..degree: the B-splines of `degree` with indices j - degree + r at x
template <typename T>
inline void de_boor(const T* t, int64_t j, T x, int degree, T* out) {
  T left[4], right[4];
  out[0] = T(1);
  for (int d = 1; d <= degree; ++d) {
    left[d] = x - t[j + 1 - d];
    right[d] = t[j + d] - x;
    T saved = T(0);
    for (int r = 0; r < d; ++r) {
      const T temp = out[r] / (right[r + 1] + left[d - r]);
      out[r] = saved + right[r + 1] * temp;
      saved = left[d - r] * temp;
    }
    out[d] = saved;
  }
}

// out[r] = B'_m(x) for the cubic B-splines m = j - 3 + r (0 where m does not exist), from the
// quadratic ones: B'_m = 3·N_m/(t[m+3]-t[m]) - 3·N_{m+1}/(t[m+4]-t[m+1])
template <typename T>
inline void cubic_derivatives(const T* t, int64_t n_knots, int64_t j, T x, T* out) {
  T quad[5] = {T(0), T(0), T(0), T(0), T(0)};
  de_boor(t, j, x, 2, quad + 1);
  const int64_t n_basis = n_knots - 4;
  for (int r = 0; r < 4; ++r) {
    const int64_t m = j - 3 + r;
    out[r] = T(0);
    if (m >= 0 && m < n_basis) {
      const T d1 = t[m + 3] - t[m], d2 = t[m + 4] - t[m + 1];
      const T a = d1 > T(0) ? quad[r] / d1 : T(0);
      const T e = d2 > T(0) ? quad[r + 1] / d2 : T(0);
      out[r] = T(3) * (a - e);
    }
  }
}

constexpr int64_t kMaxIn = 256;  // inputs per inner block (stack scratch)
// below this many inputs a uniform layer's loops run input by input: vector loops that short cost
// more in set-up and remainder handling than they save (measured: 2-3× faster for 2-14 inputs,
// 1.4× slower for 32)
constexpr int64_t kSimdIn = 16;

// ---- one layer ------------------------------------------------------------------------------

template <typename T>
struct Layer {
  int64_t n_in, n_out, n_feat, n_knots;  // n_feat = K basis functions, features K + 1
  bool uniform;
  const T* w_base;           // (out, in)
  const T* coef;             // (out, in, K)
  const T* bias;             // (out,)
  const T* mask;             // (out, in)
  const T* knots;            // (in, n_knots)
  std::vector<T> t0, inv_h;  // uniform grid: first knot and inverse spacing per input

  int64_t width() const { return (n_feat + 1) * n_in; }  // features per row
  T scale() const { return uniform ? T(1) / T(6) : T(1); }

  Layer(const std::vector<Tensor>& p, int64_t l, bool uni) : uniform(uni) {
    const Tensor& cf = p[5 * l + 1];
    n_out = cf.size(0);
    n_in = cf.size(1);
    n_feat = cf.size(2);
    n_knots = p[5 * l + 4].size(1);
    w_base = p[5 * l].data_ptr<T>();
    coef = cf.data_ptr<T>();
    bias = p[5 * l + 2].data_ptr<T>();
    mask = p[5 * l + 3].data_ptr<T>();
    knots = p[5 * l + 4].data_ptr<T>();
    if (uniform) {
      t0.resize(n_in);
      inv_h.resize(n_in);
      for (int64_t i = 0; i < n_in; ++i) {
        t0[i] = knots[i * n_knots];
        inv_h[i] = T(1) / (knots[i * n_knots + 1] - knots[i * n_knots]);
      }
    }
  }

  // w (out, K+1, in) = [w_base·mask; coef·mask·scale]
  void assemble(T* w) const {
    const T s = scale();
    for (int64_t j = 0; j < n_out; ++j)
      for (int64_t i = 0; i < n_in; ++i) {
        const T mk = mask[j * n_in + i];
        w[(j * (n_feat + 1)) * n_in + i] = w_base[j * n_in + i] * mk;
        for (int64_t m = 0; m < n_feat; ++m)
          w[(j * (n_feat + 1) + m + 1) * n_in + i] = coef[(j * n_in + i) * n_feat + m] * (mk * s);
      }
  }

  // features of `rows` rows of a (n, in) with sig = sigmoid(a) into f (rows, K+1, in)
  void features(const T* a, const T* sig, int64_t rows, T* f) const {
    const int64_t w = width();
    for (int64_t b = 0; b < rows; ++b) {
      const T* __restrict ar = a + b * n_in;
      const T* __restrict sr = sig + b * n_in;
      T* __restrict fr = f + b * w;
#pragma omp simd
      for (int64_t i = 0; i < n_in; ++i) fr[i] = ar[i] * sr[i];
      if (uniform && n_in < kSimdIn) {
        for (int64_t i = 0; i < n_in; ++i) {
          const T u = (ar[i] - t0[i]) * inv_h[i];
          for (int64_t m = 0; m < n_feat; ++m) fr[(m + 1) * n_in + i] = b6(u - T(2 + m));
        }
      } else if (uniform) {
        const T* __restrict t0p = t0.data();
        const T* __restrict ihp = inv_h.data();
        T u[kMaxIn];
        for (int64_t i0 = 0; i0 < n_in; i0 += kMaxIn) {
          const int64_t ni = std::min(n_in - i0, kMaxIn);
#pragma omp simd
          for (int64_t i = 0; i < ni; ++i) u[i] = (ar[i0 + i] - t0p[i0 + i]) * ihp[i0 + i];
          for (int64_t m = 0; m < n_feat; ++m) {
            const T c = T(2 + m);
            T* __restrict fm = fr + (m + 1) * n_in + i0;
#pragma omp simd
            for (int64_t i = 0; i < ni; ++i) fm[i] = b6(u[i] - c);
          }
        }
      } else {
        for (int64_t i = n_in; i < w; ++i) fr[i] = T(0);
        for (int64_t i = 0; i < n_in; ++i) {
          const T* t = knots + i * n_knots;
          const int64_t j = span(t, n_knots, ar[i]);
          if (j < 0) continue;
          T nz[4];
          de_boor(t, j, ar[i], 3, nz);
          for (int r = 0; r < 4; ++r) {
            const int64_t m = j - 3 + r;
            if (m >= 0 && m < n_feat) fr[(m + 1) * n_in + i] = nz[r];
          }
        }
      }
    }
  }

  // ∂L/∂a (rows, in) from G = ∂L/∂features (rows, K+1, in); for a one-output layer G[b] =
  // g[b] · w[0] is never built: pass gfeat = nullptr, g (rows,) and w
  void input_grad(const T* a, const T* sig, int64_t rows, const T* gfeat, const T* g, const T* w,
                  T* out) const {
    const int64_t wd = width();
    for (int64_t b = 0; b < rows; ++b) {
      const T* __restrict ar = a + b * n_in;
      const T* __restrict sr = sig + b * n_in;
      const T* __restrict G = gfeat != nullptr ? gfeat + b * wd : w;
      const T scale_row = gfeat != nullptr ? T(1) : g[b];
      T* __restrict o = out + b * n_in;
      if (uniform && n_in < kSimdIn) {
        for (int64_t i = 0; i < n_in; ++i) {
          const T u = (ar[i] - t0[i]) * inv_h[i];
          T acc = T(0);
          for (int64_t m = 0; m < n_feat; ++m)
            acc += G[(m + 1) * n_in + i] * db6_over_minus3(u - T(2 + m));
          o[i] = (acc * T(-3) * inv_h[i] + G[i] * silu_grad(ar[i], sr[i])) * scale_row;
        }
      } else if (uniform) {
        const T* __restrict t0p = t0.data();
        const T* __restrict ihp = inv_h.data();
        T u[kMaxIn], acc[kMaxIn];
        for (int64_t i0 = 0; i0 < n_in; i0 += kMaxIn) {
          const int64_t ni = std::min(n_in - i0, kMaxIn);
#pragma omp simd
          for (int64_t i = 0; i < ni; ++i) {
            u[i] = (ar[i0 + i] - t0p[i0 + i]) * ihp[i0 + i];
            acc[i] = T(0);
          }
          for (int64_t m = 0; m < n_feat; ++m) {
            const T c = T(2 + m);
            const T* __restrict gm = G + (m + 1) * n_in + i0;
#pragma omp simd
            for (int64_t i = 0; i < ni; ++i) acc[i] += gm[i] * db6_over_minus3(u[i] - c);
          }
#pragma omp simd
          for (int64_t i = 0; i < ni; ++i) {
            const T ds = silu_grad(ar[i0 + i], sr[i0 + i]);
            o[i0 + i] = (acc[i] * T(-3) * ihp[i0 + i] + G[i0 + i] * ds) * scale_row;
          }
        }
      } else {
        for (int64_t i = 0; i < n_in; ++i) {
          T acc = G[i] * silu_grad(ar[i], sr[i]);
          const T* t = knots + i * n_knots;
          const int64_t j = span(t, n_knots, ar[i]);
          if (j >= 0) {
            T dB[4];
            cubic_derivatives(t, n_knots, j, ar[i], dB);
            for (int r = 0; r < 4; ++r) {
              const int64_t m = j - 3 + r;
              if (m >= 0 && m < n_feat) acc += G[(m + 1) * n_in + i] * dB[r];
            }
          }
          o[i] = acc * scale_row;
        }
      }
    }
  }
};

// ---- the state buffer ----------------------------------------------------------------------

// Per layer: sigmoid(a) (n, in), weights (out, K+1, in), and for every layer but the last its
// output (n, out), which is the next layer's a.
template <typename T>
struct State {
  std::vector<T*> sig, w, hidden;
  static int64_t size(const std::vector<Layer<T>>& layers, int64_t n) {
    int64_t s = 0;
    for (size_t l = 0; l < layers.size(); ++l) {
      s += n * layers[l].n_in + layers[l].n_out * layers[l].width();
      if (l + 1 < layers.size()) s += n * layers[l].n_out;
    }
    return s;
  }
  State(const std::vector<Layer<T>>& layers, int64_t n, T* flat) {
    for (size_t l = 0; l < layers.size(); ++l) {
      sig.push_back(flat);
      flat += n * layers[l].n_in;
      w.push_back(flat);
      flat += layers[l].n_out * layers[l].width();
      if (l + 1 < layers.size()) {
        hidden.push_back(flat);
        flat += n * layers[l].n_out;
      }
    }
  }
};

constexpr int64_t kChunkValues = 1 << 14;  // feature values per chunk: 64 KiB in float32
constexpr int64_t kSerialBelow = 1 << 16;  // rows × features: below this, one thread

// per-thread scratch that only grows: no allocation (and no page faults) per call
template <typename T>
T* scratch(int64_t size) {
  thread_local std::vector<T> buf;
  if (static_cast<int64_t>(buf.size()) < size) buf.resize(size);
  return buf.data();
}

int64_t chunk_rows(int64_t width) {
  return std::max<int64_t>(8, kChunkValues / std::max<int64_t>(width, 1));
}

template <typename F>
void for_chunks(int64_t n, int64_t rows_per_chunk, int64_t width, const F& f) {
  const int64_t n_chunks = (n + rows_per_chunk - 1) / rows_per_chunk;
  const int64_t grain = n * width < kSerialBelow ? std::max<int64_t>(n_chunks, 1) : 1;
  at::parallel_for(0, n_chunks, grain, [&](int64_t c0, int64_t c1) {
    const int tid = at::get_thread_num();
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t r0 = c * rows_per_chunk;
      f(tid, r0, std::min(n, r0 + rows_per_chunk) - r0);
    }
  });
}

template <typename T>
std::vector<Layer<T>> make_layers(const std::vector<Tensor>& p, at::IntArrayRef uniform) {
  std::vector<Layer<T>> layers;
  const int64_t L = static_cast<int64_t>(p.size()) / 5;
  for (int64_t l = 0; l < L; ++l) layers.emplace_back(p, l, uniform[l] != 0);
  return layers;
}

void check_inputs(const Tensor& x, const std::vector<Tensor>& p, at::IntArrayRef uniform) {
  TORCH_CHECK(x.dim() == 2, "spline_network: x must be (batch, in)");
  TORCH_CHECK(p.size() % 5 == 0 && !p.empty(), "spline_network: 5 tensors per layer");
  TORCH_CHECK(static_cast<int64_t>(uniform.size()) == static_cast<int64_t>(p.size() / 5),
              "spline_network: one uniform flag per layer");
  int64_t n_in = x.size(1);
  for (size_t l = 0; l < p.size() / 5; ++l) {
    const Tensor& coef = p[5 * l + 1];
    TORCH_CHECK(coef.dim() == 3 && coef.size(1) == n_in, "spline_network: layer ", l, " expects ",
                coef.size(1), " inputs, gets ", n_in);
    for (int k = 0; k < 5; ++k) {
      const Tensor& t = p[5 * l + k];
      TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == x.scalar_type() && t.is_contiguous(),
                  "spline_network: parameters must be contiguous CPU tensors in x's dtype");
    }
    TORCH_CHECK(p[5 * l + 4].size(1) == coef.size(2) + 4, "spline_network: cubic knots expected");
    n_in = coef.size(0);
  }
}

// ---- forward ----------------------------------------------------------------------------------

template <typename T>
void forward_impl(const Tensor& x, const std::vector<Tensor>& p, at::IntArrayRef uniform, Tensor& y,
                  Tensor& flat) {
  const auto layers = make_layers<T>(p, uniform);
  const int64_t n = x.size(0), L = static_cast<int64_t>(layers.size());
  flat = at::empty({State<T>::size(layers, n)}, x.options());
  State<T> st(layers, n, flat.data_ptr<T>());
  y = at::empty({n, layers.back().n_out}, x.options());
  const T* a = x.data_ptr<T>();
  for (int64_t l = 0; l < L; ++l) {
    const Layer<T>& ly = layers[l];
    const int64_t in = ly.n_in, out = ly.n_out, wd = ly.width();
    {
      auto opts = x.options();
      Tensor av = at::from_blob(const_cast<T*>(a), {n * in}, opts);
      Tensor sv = at::from_blob(st.sig[l], {n * in}, opts);
      at::cpu::sigmoid_out(sv, av);  // ATen's vectorised exp, without the dispatcher
    }
    ly.assemble(st.w[l]);
    T* o = l + 1 < L ? st.hidden[l] : y.data_ptr<T>();
    const T* sig = st.sig[l];
    const T* w = st.w[l];
    const int64_t rows = chunk_rows(wd);
    for_chunks(n, rows, wd, [&](int, int64_t r0, int64_t nr) {
      T* f = scratch<T>(rows * wd);
      ly.features(a + r0 * in, sig + r0 * in, nr, f);
      T* orow = o + r0 * out;
      for (int64_t b = 0; b < nr; ++b)
        for (int64_t j = 0; j < out; ++j) orow[b * out + j] = ly.bias[j];
      gemm<T>(false, true, nr, out, wd, T(1), f, wd, w, wd, T(1), orow, out);
    });
    a = o;
  }
}

std::tuple<Tensor, Tensor> spline_network_forward(const Tensor& x_, at::TensorList params,
                                                  at::IntArrayRef uniform) {
  std::vector<Tensor> p(params.begin(), params.end());
  Tensor x = x_.contiguous();
  check_inputs(x, p, uniform);
  Tensor y, flat;
  OneThreadBlas one_thread;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spline_network_forward",
                             [&] { forward_impl<scalar_t>(x, p, uniform, y, flat); });
  return {y, flat};
}

// ---- backward ---------------------------------------------------------------------------------

template <typename T>
std::vector<Tensor> backward_impl(const Tensor& g_, const Tensor& x, const std::vector<Tensor>& p,
                                  const Tensor& flat, at::IntArrayRef uniform, bool need_x) {
  const auto layers = make_layers<T>(p, uniform);
  const int64_t n = x.size(0), L = static_cast<int64_t>(layers.size());
  TORCH_CHECK(g_.dim() == 2 && g_.size(0) == n && g_.size(1) == layers.back().n_out &&
                  g_.scalar_type() == x.scalar_type(),
              "spline_network_backward: the gradient must be (batch, out) in x's dtype");
  TORCH_CHECK(flat.numel() == State<T>::size(layers, n) && flat.scalar_type() == x.scalar_type(),
              "spline_network_backward: state does not belong to this network and batch");
  State<T> st(layers, n, const_cast<T*>(flat.data_ptr<T>()));
  const int nt = at::get_num_threads();
  std::vector<Tensor> grads(1 + 3 * L);
  Tensor g = g_.contiguous();
  for (int64_t l = L - 1; l >= 0; --l) {
    const Layer<T>& ly = layers[l];
    const int64_t in = ly.n_in, out = ly.n_out, wd = ly.width();
    const T* a = l == 0 ? x.data_ptr<T>() : st.hidden[l - 1];
    const T* sig = st.sig[l];
    const T* w = st.w[l];
    const T* gp = g.data_ptr<T>();
    const bool want_x = l > 0 || need_x;
    Tensor gx = want_x ? at::empty({n, in}, x.options()) : Tensor();
    T* gxp = want_x ? gx.data_ptr<T>() : nullptr;
    const int64_t rows = chunk_rows(wd);
    const bool rank1 = out == 1;
    // per thread: the weight and bias gradients (out × wd + out), summed after the loop;
    // scratch: features and the feature gradient of a chunk
    const int64_t acc_size = out * wd + out;
    std::vector<T> acc(static_cast<size_t>(nt) * acc_size, T(0));
    for_chunks(n, rows, wd, [&](int tid, int64_t r0, int64_t nr) {
      T* f = scratch<T>(rows * wd * (want_x && !rank1 ? 2 : 1));
      T* gw = acc.data() + static_cast<int64_t>(tid) * acc_size;
      T* gb = gw + out * wd;
      const T* gc = gp + r0 * out;
      ly.features(a + r0 * in, sig + r0 * in, nr, f);
      gemm<T>(true, false, out, wd, nr, T(1), gc, out, f, wd, T(1), gw, wd);  // gw += gᵀ·F
      for (int64_t b = 0; b < nr; ++b)
        for (int64_t j = 0; j < out; ++j) gb[j] += gc[b * out + j];
      if (!want_x) return;
      if (rank1) {
        ly.input_grad(a + r0 * in, sig + r0 * in, nr, nullptr, gc, w, gxp + r0 * in);
      } else {
        T* G = f + rows * wd;
        gemm<T>(false, false, nr, wd, out, T(1), gc, out, w, wd, T(0), G, wd);  // G = g·W
        ly.input_grad(a + r0 * in, sig + r0 * in, nr, G, nullptr, nullptr, gxp + r0 * in);
      }
    });
    // reduce the threads' partial sums (in thread order: deterministic for a thread count)
    Tensor g_base = at::empty({out, in}, x.options());
    Tensor g_coef = at::empty({out, in, ly.n_feat}, x.options());
    Tensor g_bias = at::empty({out}, x.options());
    std::vector<T> gw(acc_size, T(0));
    for (int t = 0; t < nt; ++t) {
      const T* src = acc.data() + static_cast<int64_t>(t) * acc_size;
      for (int64_t k = 0; k < acc_size; ++k) gw[k] += src[k];
    }
    T* gbp = g_base.data_ptr<T>();
    T* gcp = g_coef.data_ptr<T>();
    const T s = ly.scale();
    for (int64_t j = 0; j < out; ++j)
      for (int64_t i = 0; i < in; ++i) {
        const T mk = ly.mask[j * in + i];
        gbp[j * in + i] = gw[(j * (ly.n_feat + 1)) * in + i] * mk;
        for (int64_t m = 0; m < ly.n_feat; ++m)
          gcp[(j * in + i) * ly.n_feat + m] = gw[(j * (ly.n_feat + 1) + m + 1) * in + i] * (mk * s);
      }
    std::copy(gw.begin() + out * wd, gw.end(), g_bias.data_ptr<T>());
    grads[1 + 3 * l] = g_base;
    grads[2 + 3 * l] = g_coef;
    grads[3 + 3 * l] = g_bias;
    g = gx;
  }
  grads[0] = need_x ? g : at::zeros_like(x);
  return grads;
}

std::vector<Tensor> spline_network_backward(const Tensor& g, const Tensor& x_,
                                            at::TensorList params, const Tensor& flat,
                                            at::IntArrayRef uniform, bool need_x) {
  std::vector<Tensor> p(params.begin(), params.end());
  Tensor x = x_.contiguous();
  check_inputs(x, p, uniform);
  std::vector<Tensor> out;
  OneThreadBlas one_thread;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "spline_network_backward", [&] {
    out = backward_impl<scalar_t>(g, x, p, flat.contiguous(), uniform, need_x);
  });
  return out;
}

bool has_blas() { return blas().sgemm != nullptr && blas().dgemm != nullptr; }

// whether GEMMs call the BLAS symbols directly (true) or at::mm_out; returns the previous value
bool use_blas(bool on) { return blas().use.exchange(on); }

}  // namespace

TORCH_LIBRARY(kan_core_native, m) {
  m.def("spline_network(Tensor x, Tensor[] params, int[] uniform) -> (Tensor, Tensor)");
  m.def(
      "spline_network_backward(Tensor g, Tensor x, Tensor[] params, Tensor state, int[] uniform, "
      "bool need_x) -> Tensor[]");
  m.def("has_blas() -> bool", [] { return has_blas(); });
  m.def("use_blas(bool on) -> bool", [](bool on) { return use_blas(on); });
}

TORCH_LIBRARY_IMPL(kan_core_native, CPU, m) {
  m.impl("spline_network", &spline_network_forward);
  m.impl("spline_network_backward", &spline_network_backward);
}
