/* One-pass streaming statistics of a conv activation on the CPU: repdiag's optional native kernel.
 *
 * StreamingStats.update (repdiag/capture/_stats.py) has an eager path that reads every activation
 * five times (zero mask, sum, sum of squares, min, max) and then runs some forty small tensor ops
 * to fold the per-map results into the running per-unit state. This kernel reads the activation
 * once and updates the state in place, which is what makes recording every step cheap on a CPU.
 * It is built when a C compiler is present (setup.py marks it optional); without it repdiag uses
 * the eager path, which computes the same statistics (tests/test_native.py compares them).
 *
 * x holds n samples x d units x p positions (p >= 1), contiguous; a "map" is the p entries of one
 * unit of one sample. Outputs, all by address:
 *   means[n*d]       per-map mean (float64): the recorder's reduce="mean" rows
 * and in-place updates of the per-unit state (d entries each):
 *   mean, m2         float64, Chan et al.'s parallel merge of this batch's mean and M2 into the
 *                    running ones, given n_a entries per unit seen before
 *   mn, mx           float64, running min / max; NaN once a unit has seen a NaN (as torch.minimum)
 *   zeros            int64, entries with |x| <= eps
 *   zero_maps        int64, maps whose every entry is such a zero
 *   nonfinite        int64, maps whose sum is not finite (a NaN or Inf inside)
 *   hist[bins]       int64, each sample's zero fraction z / (d*p) rounded to the nearest
 *                    1/(bins-1), halves up, in exact integer arithmetic
 * Float32 entries are summed in float32 SIMD lanes over blocks of BLOCK entries and the block sums
 * are added in float64; float64 entries are summed in float64. A map's M2 is s2 - s1^2/p in
 * float64 (clamped at 0), as in the eager path.
 *
 * The Python caller (repdiag/capture/_native.py) checks shapes, dtypes, devices and contiguity.
 * The kernel only reads x. It keeps the GIL: it updates a layer's state in place, and a model
 * run from several Python threads at once calls that layer's hook concurrently; the GIL
 * serialises those calls.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define BLOCK 512

/* AVX2 where the compiler and loader can pick a clone at run time, the baseline ISA otherwise. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define REPDIAG_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define REPDIAG_CLONES
#endif

typedef struct {
    double *means, *mean, *m2, *mn, *mx;
    int64_t *zeros, *zero_maps, *nonfinite, *hist, *sample_zeros;
    double *sum_means, *sum_m2, *dev2;
    int64_t n, d, p, bins, n_a;
} state_t;

/* Pass over x: per-map sums, zero counts and extremes; everything else works on (n, d) arrays. */
#define DEFINE_PASS(NAME, T, ABS)                                                              \
    REPDIAG_CLONES static void NAME(const T *x, T eps, state_t *s, T *lo_u, T *hi_u, T *nan_u) \
    {                                                                                          \
        const int64_t d = s->d, p = s->p;                                                      \
        for (int64_t r = 0; r < s->n * d; ++r) {                                               \
            const T *v = x + r * p;                                                            \
            double a_sum = 0.0, b_sum = 0.0;                                                   \
            int64_t z_sum = 0;                                                                 \
            T nan = 0, lo = (T)INFINITY, hi = (T)-INFINITY;                                    \
            for (int64_t j0 = 0; j0 < p; j0 += BLOCK) {                                        \
                int64_t j1 = j0 + BLOCK < p ? j0 + BLOCK : p;                                  \
                T a = 0, b = 0, z = 0;                                                         \
                _Pragma("omp simd reduction(+:a,b,z,nan) reduction(min:lo) reduction(max:hi)") \
                for (int64_t k = j0; k < j1; ++k) {                                            \
                    T t = v[k];                                                                \
                    a += t;                                                                    \
                    b += t * t;                                                                \
                    z += ABS(t) <= eps ? (T)1 : (T)0;                                          \
                    nan += t != t ? (T)1 : (T)0;                                               \
                    lo = t < lo ? t : lo;                                                      \
                    hi = t > hi ? t : hi;                                                      \
                }                                                                              \
                a_sum += (double)a;                                                            \
                b_sum += (double)b;                                                            \
                z_sum += (int64_t)z; /* exact: at most BLOCK ones */                           \
            }                                                                                  \
            const int64_t u = r % d;                                                           \
            const double mean = a_sum / (double)p;                                             \
            double m2 = b_sum - a_sum * mean;                                                  \
            s->means[r] = mean;                                                                \
            s->sum_means[u] += mean;                                                           \
            s->sum_m2[u] += m2 > 0 ? m2 : 0.0;                                                 \
            s->zeros[u] += z_sum;                                                              \
            s->zero_maps[u] += z_sum == p;                                                     \
            s->nonfinite[u] += !isfinite(mean);                                                \
            s->sample_zeros[r / d] += z_sum;                                                   \
            nan_u[u] += nan;                                                                   \
            lo_u[u] = lo < lo_u[u] ? lo : lo_u[u];                                             \
            hi_u[u] = hi > hi_u[u] ? hi : hi_u[u];                                             \
        }                                                                                      \
    }

DEFINE_PASS(pass_f32, float, fabsf)
DEFINE_PASS(pass_f64, double, fabs)

/* Fold the batch into the running state (n >= 1). */
static void fold(state_t *s, const double *lo_u, const double *hi_u, const double *nan_u)
{
    const int64_t n = s->n, d = s->d, p = s->p;
    for (int64_t r = 0; r < n * d; ++r) { /* spread of the map means about the batch mean */
        const int64_t u = r % d;
        const double dm = s->means[r] - s->sum_means[u] / (double)n;
        s->dev2[u] += dm * dm;
    }
    const double n_b = (double)(n * p), n_a = (double)s->n_a, tot = n_a + n_b;
    for (int64_t u = 0; u < d; ++u) {
        const double mean_b = s->sum_means[u] / (double)n;
        const double m2_b = s->sum_m2[u] + s->dev2[u] * (double)p;
        const double delta = mean_b - s->mean[u];
        s->mean[u] += delta * (n_b / tot);
        s->m2[u] += m2_b + delta * delta * (n_a * n_b / tot);
        if (nan_u[u] > 0 || s->mn[u] != s->mn[u]) {
            s->mn[u] = NAN;
            s->mx[u] = NAN;
        } else {
            s->mn[u] = lo_u[u] < s->mn[u] ? lo_u[u] : s->mn[u];
            s->mx[u] = hi_u[u] > s->mx[u] ? hi_u[u] : s->mx[u];
        }
    }
    const int64_t dp = d * p, top = s->bins - 1;
    for (int64_t i = 0; i < n; ++i) /* round(z * top / dp), halves up, z <= dp */
        s->hist[(s->sample_zeros[i] * 2 * top + dp) / (2 * dp)] += 1;
}

static PyObject *update_maps(PyObject *self, PyObject *args)
{
    unsigned long long x, means, mean, m2, mn, mx, zeros, zero_maps, nonfinite, hist;
    long long n, d, p, bins, n_a;
    double eps;
    int itemsize;
    (void)self;
    if (!PyArg_ParseTuple(args, "KLLLdiLKKKKKKKKKL", &x, &n, &d, &p, &eps, &itemsize, &n_a, &means, &mean,
                          &m2, &mn, &mx, &zeros, &zero_maps, &nonfinite, &hist, &bins))
        return NULL;
    if (n < 1 || d < 1 || p < 1 || n_a < 0 || bins < 2 || (itemsize != 4 && itemsize != 8)) {
        PyErr_Format(PyExc_ValueError,
                     "update_maps: needs n, d, p >= 1, n_a >= 0, bins >= 2 and itemsize 4 or 8; got n=%lld d=%lld "
                     "p=%lld n_a=%lld bins=%lld itemsize=%d", n, d, p, n_a, bins, itemsize);
        return NULL;
    }
    /* work: per-unit sums, extremes and NaN counts (6 x d doubles), the same extremes and counts
     * in float32 for float32 input (3 x d floats), per-sample zero counts (n int64) */
    double *work = calloc((size_t)(6 * d), sizeof(double));
    float *work32 = itemsize == 4 ? calloc((size_t)(3 * d), sizeof(float)) : NULL;
    int64_t *sample_zeros = calloc((size_t)n, sizeof(int64_t));
    if (work == NULL || sample_zeros == NULL || (itemsize == 4 && work32 == NULL)) {
        free(work);
        free(work32);
        free(sample_zeros);
        return PyErr_NoMemory();
    }
    state_t s = {
        (double *)(uintptr_t)means, (double *)(uintptr_t)mean, (double *)(uintptr_t)m2,
        (double *)(uintptr_t)mn, (double *)(uintptr_t)mx, (int64_t *)(uintptr_t)zeros,
        (int64_t *)(uintptr_t)zero_maps, (int64_t *)(uintptr_t)nonfinite, (int64_t *)(uintptr_t)hist,
        sample_zeros, work, work + d, work + 2 * d, n, d, p, bins, n_a,
    };
    double *lo_u = work + 3 * d, *hi_u = work + 4 * d, *nan_u = work + 5 * d;
    if (itemsize == 4) {
        float *lo = work32, *hi = work32 + d, *nan = work32 + 2 * d;
        for (int64_t u = 0; u < d; ++u) {
            lo[u] = INFINITY;
            hi[u] = -INFINITY;
        }
        pass_f32((const float *)(uintptr_t)x, (float)eps, &s, lo, hi, nan);
        for (int64_t u = 0; u < d; ++u) {
            lo_u[u] = lo[u];
            hi_u[u] = hi[u];
            nan_u[u] = nan[u];
        }
    } else {
        for (int64_t u = 0; u < d; ++u) {
            lo_u[u] = INFINITY;
            hi_u[u] = -INFINITY;
        }
        pass_f64((const double *)(uintptr_t)x, eps, &s, lo_u, hi_u, nan_u);
    }
    fold(&s, lo_u, hi_u, nan_u);
    free(work);
    free(work32);
    free(sample_zeros);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"update_maps", update_maps, METH_VARARGS,
     "update_maps(x, n, d, p, eps, itemsize, n_a, means, mean, m2, mn, mx, zeros, zero_maps, nonfinite, hist, "
     "bins): fold a contiguous (n, d, p) float32/float64 activation into StreamingStats' state, all by "
     "address. Private to repdiag.capture._native."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mapstats", "repdiag's one-pass streaming-statistics kernel.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__mapstats(void) { return PyModule_Create(&module); }
