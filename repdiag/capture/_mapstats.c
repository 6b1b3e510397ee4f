/* One-pass per-map statistics of a conv activation on the CPU: repdiag's optional native kernel.
 *
 * The eager path (repdiag/capture/_stats.py, _map_reductions) reads every activation five times
 * (zero mask, sum, sum of squares, min, max). This kernel reads it once and computes all of them,
 * which is what makes recording every step cheap on a CPU. It is built when a C compiler is
 * present (setup.py marks it optional); without it repdiag uses the eager path, which computes
 * the same values.
 *
 * x holds n samples x d units x p positions, contiguous. For every map (sample i, unit j):
 *   s1[i*d+j] = sum of the map's entries               (float64)
 *   s2[i*d+j] = sum of their squares                    (float64)
 *   zc[i*d+j] = entries with |x| <= eps                 (the input's float type)
 * and for every unit j, over all its maps:
 *   mn[j], mx[j] = min / max entry, NaN if any entry is NaN (as torch.amin / torch.amax).
 * Float32 entries are summed in float32 SIMD lanes over blocks of BLOCK entries and the block
 * sums are added in float64; float64 entries are summed in float64.
 *
 * The function takes raw addresses (Tensor.data_ptr()); the Python caller checks shapes, dtypes
 * and contiguity. It only reads x and releases the GIL while it runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

#define BLOCK 512

/* AVX2 where the compiler and loader can pick a clone at run time, the baseline ISA otherwise. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define REPDIAG_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define REPDIAG_CLONES
#endif

#define DEFINE_KERNEL(NAME, T, ABS)                                                            \
    REPDIAG_CLONES static void NAME(const T *x, int64_t n, int64_t d, int64_t p, T eps,        \
                                    double *s1, double *s2, T *zc, T *mn, T *mx)               \
    {                                                                                          \
        for (int64_t j = 0; j < d; ++j) {                                                      \
            mn[j] = (T)INFINITY;                                                               \
            mx[j] = (T)-INFINITY;                                                              \
        }                                                                                      \
        for (int64_t r = 0; r < n * d; ++r) {                                                  \
            const T *v = x + r * p;                                                            \
            double a_sum = 0.0, b_sum = 0.0;                                                   \
            T z = 0, nan = 0, lo = (T)INFINITY, hi = (T)-INFINITY;                             \
            for (int64_t j0 = 0; j0 < p; j0 += BLOCK) {                                        \
                int64_t j1 = j0 + BLOCK < p ? j0 + BLOCK : p;                                  \
                T a = 0, b = 0;                                                                \
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
            }                                                                                  \
            s1[r] = a_sum;                                                                     \
            s2[r] = b_sum;                                                                     \
            zc[r] = z;                                                                         \
            int64_t u = r % d;                                                                 \
            if (nan > 0) {                                                                     \
                mn[u] = (T)NAN;                                                                \
                mx[u] = (T)NAN;                                                                \
            } else if (mn[u] == mn[u]) { /* a unit that has seen a NaN keeps it */            \
                mn[u] = lo < mn[u] ? lo : mn[u];                                               \
                mx[u] = hi > mx[u] ? hi : mx[u];                                               \
            }                                                                                  \
        }                                                                                      \
    }

DEFINE_KERNEL(map_stats_f32, float, fabsf)
DEFINE_KERNEL(map_stats_f64, double, fabs)

static PyObject *map_stats(PyObject *self, PyObject *args)
{
    unsigned long long x, s1, s2, zc, mn, mx;
    long long n, d, p;
    double eps;
    int itemsize;
    (void)self;
    if (!PyArg_ParseTuple(args, "KLLLdiKKKKK", &x, &n, &d, &p, &eps, &itemsize, &s1, &s2, &zc, &mn, &mx))
        return NULL;
    if (n < 0 || d < 0 || p < 0 || (itemsize != 4 && itemsize != 8)) {
        PyErr_SetString(PyExc_ValueError, "map_stats: negative size or itemsize other than 4/8");
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    if (itemsize == 4)
        map_stats_f32((const float *)(uintptr_t)x, n, d, p, (float)eps, (double *)(uintptr_t)s1,
                      (double *)(uintptr_t)s2, (float *)(uintptr_t)zc, (float *)(uintptr_t)mn,
                      (float *)(uintptr_t)mx);
    else
        map_stats_f64((const double *)(uintptr_t)x, n, d, p, eps, (double *)(uintptr_t)s1,
                      (double *)(uintptr_t)s2, (double *)(uintptr_t)zc, (double *)(uintptr_t)mn,
                      (double *)(uintptr_t)mx);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"map_stats", map_stats, METH_VARARGS,
     "map_stats(x, n, d, p, eps, itemsize, s1, s2, zc, mn, mx): per-map sums, sums of squares and "
     "zero counts and per-unit min/max of a contiguous (n, d, p) float32/float64 array, all by "
     "address. Private to repdiag.capture._native."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_mapstats", "repdiag's one-pass per-map statistics kernel.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__mapstats(void) { return PyModule_Create(&module); }
