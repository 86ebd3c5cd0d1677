/*
 * decloud._kernels: the two per-pixel loops of the raster read path, in one pass each.
 *
 * numpy needs five to seven passes over every output pixel for these (cast, scale,
 * nodata test, interpolation sums, NaN fill); here each output pixel is computed from
 * the decoded integers and written once. The arithmetic is the numpy path's, step for
 * step, in IEEE float32 (built with -ffp-contract=off: no fused multiply-add), so the
 * results are the same to the bit; decloud/grid.py keeps the numpy path as the
 * reference and for the cases these loops do not cover, and the tests compare both.
 *
 * scale_nodata(src, out, nodata, has_nodata, scale, apply_scale, offset)
 *     out = (float)src * scale + offset, NaN where src == nodata.
 * upsample2(src, out, row_index, row_far, col_index, col_far, nodata, has_nodata,
 *           scale, apply_scale, offset)
 *     Bilinear upsampling by 2 (weights 1/4 and 3/4) with GDAL's renormalisation over
 *     valid neighbours; output pixel (r, c) uses source rows row_index[r] and the next,
 *     columns col_index[c] and the next, the next one weighing 3/4 when *_far is 1.
 *
 * src: int16 or uint16, 2-D, any strides; out: float32, 2-D, any strides; the index
 * arrays: contiguous int32 (indexes) and uint8 (flags); nodata, when has_nodata, a value
 * of src's type (ValueError otherwise). The GIL is released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    Py_buffer view;
    int held;
} Buf;

static void release(Buf *b) {
    if (b->held) {
        PyBuffer_Release(&b->view);
        b->held = 0;
    }
}

/* Take a 2-D strided buffer and check its item format. */
static int take2d(PyObject *obj, Buf *b, int writable, const char *formats, const char *what) {
    int flags = PyBUF_RECORDS_RO;
    if (writable) flags = PyBUF_RECORDS;
    if (PyObject_GetBuffer(obj, &b->view, flags) < 0) return -1;
    b->held = 1;
    const char *fmt = b->view.format ? b->view.format : "B";
    if (fmt[0] == '<' || fmt[0] == '=' || fmt[0] == '@') fmt++;
    if (b->view.ndim != 2 || strlen(fmt) != 1 || !strchr(formats, fmt[0])) {
        PyErr_Format(PyExc_TypeError, "%s must be a 2-D array of type '%s'", what, formats);
        return -1;
    }
    return 0;
}

static int take1d(PyObject *obj, Buf *b, char format, Py_ssize_t length, const char *what) {
    if (PyObject_GetBuffer(obj, &b->view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    b->held = 1;
    const char *fmt = b->view.format ? b->view.format : "B";
    if (fmt[0] == '<' || fmt[0] == '=' || fmt[0] == '@') fmt++;
    if (b->view.ndim != 1 || fmt[0] != format || fmt[1] != '\0' ||
        b->view.shape[0] != length) {
        PyErr_Format(PyExc_TypeError, "%s must be a contiguous 1-D array of '%c', length %zd",
                     what, format, length);
        return -1;
    }
    return 0;
}

/* nodata must be a value of the source type: a cast would wrap it (-1 as uint16 is
   65535) and the two functions, which compare in the source type and in int32, would
   then disagree. */
static int check_nodata(char kind, long long nodata, int has_nodata) {
    long long lo = kind == 'h' ? INT16_MIN : 0, hi = kind == 'h' ? INT16_MAX : UINT16_MAX;
    if (has_nodata && (nodata < lo || nodata > hi)) {
        PyErr_Format(PyExc_ValueError, "nodata %lld is not a value of the source type '%c'",
                     nodata, kind);
        return -1;
    }
    return 0;
}

#define AT(b, T, r, c) \
    (*(T *)((char *)(b).view.buf + (r) * (b).view.strides[0] + (c) * (b).view.strides[1]))

/* ---------------------------------------------------------------- scale_nodata */

/* One row, contiguous: the flags are tested once per row, so that each loop is a
   plain vectorisable one (cast, multiply, add, select). */
#define SCALE_ROW(T)                                                              \
    {                                                                             \
        const T *restrict sv = (const T *)s;                                      \
        float *restrict ov = (float *)o;                                          \
        if (apply_scale && apply_offset)                                          \
            for (Py_ssize_t c = 0; c < w; c++) ov[c] = (float)sv[c] * scale + offset; \
        else if (apply_scale)                                                     \
            for (Py_ssize_t c = 0; c < w; c++) ov[c] = (float)sv[c] * scale;      \
        else if (apply_offset)                                                    \
            for (Py_ssize_t c = 0; c < w; c++) ov[c] = (float)sv[c] + offset;     \
        else                                                                      \
            for (Py_ssize_t c = 0; c < w; c++) ov[c] = (float)sv[c];              \
        if (has_nodata) {                                                         \
            T ndv = (T)nodata;                                                    \
            for (Py_ssize_t c = 0; c < w; c++) ov[c] = sv[c] == ndv ? NAN : ov[c]; \
        }                                                                         \
    }

#define SCALE_LOOP(T)                                                             \
    for (Py_ssize_t r = 0; r < h; r++) {                                          \
        const char *s = (const char *)src.view.buf + r * src.view.strides[0];     \
        char *o = (char *)out.view.buf + r * out.view.strides[0];                 \
        Py_ssize_t ss = src.view.strides[1], os = out.view.strides[1];            \
        if (ss == (Py_ssize_t)sizeof(T) && os == (Py_ssize_t)sizeof(float)) {     \
            SCALE_ROW(T)                                                          \
            continue;                                                             \
        }                                                                         \
        for (Py_ssize_t c = 0; c < w; c++) {                                      \
            T v = *(const T *)(s + c * ss);                                       \
            float x = (float)v;                                                   \
            if (apply_scale) x = x * scale;                                       \
            if (apply_offset) x = x + offset;                                     \
            if (has_nodata && v == (T)nodata) x = NAN;                            \
            *(float *)(o + c * os) = x;                                           \
        }                                                                         \
    }

static PyObject *scale_nodata(PyObject *self, PyObject *args) {
    PyObject *src_obj, *out_obj;
    long long nodata;
    int has_nodata, apply_scale;
    float scale, offset;
    if (!PyArg_ParseTuple(args, "OOLpfpf", &src_obj, &out_obj, &nodata, &has_nodata, &scale,
                          &apply_scale, &offset))
        return NULL;
    Buf src = {0}, out = {0};
    if (take2d(src_obj, &src, 0, "hH", "src") < 0 || take2d(out_obj, &out, 1, "f", "out") < 0)
        goto fail;
    Py_ssize_t h = out.view.shape[0], w = out.view.shape[1];
    if (src.view.shape[0] != h || src.view.shape[1] != w) {
        PyErr_SetString(PyExc_ValueError, "src and out must have the same shape");
        goto fail;
    }
    int apply_offset = offset != 0.0f;
    char kind = src.view.format[strlen(src.view.format) - 1];
    if (check_nodata(kind, nodata, has_nodata) < 0) goto fail;
    Py_BEGIN_ALLOW_THREADS
    if (kind == 'h') {
        SCALE_LOOP(int16_t)
    } else {
        SCALE_LOOP(uint16_t)
    }
    Py_END_ALLOW_THREADS
    release(&src);
    release(&out);
    Py_RETURN_NONE;
fail:
    release(&src);
    release(&out);
    return NULL;
}

/* ---------------------------------------------------------------- upsample2 */

/* One output row from source rows a (weight ra) and b (weight rb), ra + rb = 4.
   vert[j] = ra a[j] + rb b[j] and bad[j] (a[j] or b[j] nodata) over the columns used;
   every pixel gets the plain formula through vectorisable loops over the column
   phases, then the pixels with a nodata neighbour are redone one by one. */
#define UPSAMPLE_ROW(T)                                                               \
    {                                                                                 \
        const char *pa = (const char *)src.view.buf + i * src.view.strides[0];        \
        const char *pb = pa + src.view.strides[0];                                    \
        Py_ssize_t ss = src.view.strides[1], nbad = 0, nmissing = 0;                  \
        if (ss == (Py_ssize_t)sizeof(T)) {                                            \
            const T *restrict ta = (const T *)pa + jlo, *restrict tb = (const T *)pb + jlo; \
            int32_t *restrict vv = vert;                                              \
            for (Py_ssize_t j = 0; j <= jhi - jlo; j++) vv[j] = ra * ta[j] + rb * tb[j]; \
            if (has_nodata) {                                                         \
                uint8_t *restrict bb = bad;                                           \
                T ndv = (T)nd;                                                        \
                for (Py_ssize_t j = 0; j <= jhi - jlo; j++) {                         \
                    int ma = ta[j] == ndv, mb = tb[j] == ndv;                         \
                    bb[j] = (uint8_t)(ma | (mb << 1));                                \
                    nbad += ma | mb;                                                  \
                    nmissing += ma + mb;                                              \
                }                                                                     \
            }                                                                         \
        } else for (Py_ssize_t j = jlo; j <= jhi; j++) {                              \
            int32_t va = *(const T *)(pa + j * ss), vb = *(const T *)(pb + j * ss);   \
            vert[j - jlo] = ra * va + rb * vb;                                        \
            if (has_nodata) {                                                         \
                int ma = va == nd, mb = vb == nd;                                     \
                bad[j - jlo] = (uint8_t)(ma | (mb << 1));                             \
                nbad += ma | mb;                                                      \
                nmissing += ma + mb;                                                  \
            }                                                                         \
        }                                                                             \
        if (nmissing == 2 * (jhi - jlo + 1)) { /* no valid pixel: all NaN */          \
            for (Py_ssize_t c = 0; c < w; c++) *(float *)(o + c * os) = NAN;         \
            continue;                                                                 \
        }                                                                             \
        for (int p = 0; p < nphases; p++) {                                           \
            const int32_t *restrict v = vert + (phase_src[p] - jlo);                  \
            float *restrict f = flt + p * half;                                       \
            Py_ssize_t n = phase_count[p];                                            \
            if (phase_far[p])                                                         \
                for (Py_ssize_t m = 0; m < n; m++) f[m] = (float)(v[m] + 3 * v[m + 1]) * factor; \
            else                                                                      \
                for (Py_ssize_t m = 0; m < n; m++) f[m] = (float)(3 * v[m] + v[m + 1]) * factor; \
            if (apply_offset)                                                         \
                for (Py_ssize_t m = 0; m < n; m++) f[m] = f[m] + offset;              \
        }                                                                             \
        if (os == (Py_ssize_t)sizeof(float) && nphases == 2) {                        \
            /* Interleave the two phases: out[2m + first] (first 0 then 1). */        \
            float *restrict ov = (float *)o;                                          \
            const float *restrict f0 = flt + (phase_first[0] ? half : 0);             \
            const float *restrict f1 = flt + (phase_first[0] ? 0 : half);             \
            Py_ssize_t n0 = phase_first[0] ? phase_count[1] : phase_count[0];         \
            Py_ssize_t n1 = phase_first[0] ? phase_count[0] : phase_count[1];         \
            Py_ssize_t both = n0 < n1 ? n0 : n1;                                      \
            for (Py_ssize_t m = 0; m < both; m++) {                                   \
                ov[2 * m] = f0[m];                                                    \
                ov[2 * m + 1] = f1[m];                                                \
            }                                                                         \
            if (n0 > both) ov[2 * both] = f0[both];                                   \
        } else {                                                                      \
            for (int p = 0; p < nphases; p++) {                                       \
                char *op = o + phase_first[p] * os;                                   \
                const float *f = flt + p * half;                                      \
                for (Py_ssize_t m = 0; m < phase_count[p]; m++)                       \
                    *(float *)(op + m * 2 * os) = f[m];                               \
            }                                                                         \
        }                                                                             \
        if (nbad == 0) continue;                                                      \
        /* Only the targets whose source columns reach the first..last bad column. */ \
        Py_ssize_t jb0 = 0, jb1 = jhi - jlo;                                          \
        while (!bad[jb0]) jb0++;                                                      \
        while (!bad[jb1]) jb1--;                                                      \
        Py_ssize_t c0 = 0, c1 = w;                                                    \
        while (c0 < w && cidx[c0] + 1 - jlo < jb0) c0++;                              \
        while (c1 > c0 && cidx[c1 - 1] - jlo > jb1) c1--;                             \
        for (Py_ssize_t c = c0; c < c1; c++) {                                        \
            Py_ssize_t j = cidx[c];                                                   \
            /* Missing flags: bit 0 a[j], 1 b[j], 2 a[j + 1], 3 b[j + 1]. */          \
            int m4 = bad[j - jlo] | (bad[j + 1 - jlo] << 2);                          \
            if (m4 == 0) continue;                                                    \
            if (m4 == 15) {                                                           \
                *(float *)(o + c * os) = NAN;                                         \
                continue;                                                             \
            }                                                                         \
            int32_t ca = cfar[c] ? 1 : 3, cb = 4 - ca;                                \
            int32_t v[4] = {*(const T *)(pa + j * ss), *(const T *)(pa + (j + 1) * ss), \
                            *(const T *)(pb + j * ss), *(const T *)(pb + (j + 1) * ss)}; \
            int32_t wt[4] = {ra * ca, ra * cb, rb * ca, rb * cb};                     \
            int32_t num = 0, den = 0;                                                 \
            for (int q = 0; q < 4; q++) {                                             \
                if (v[q] != nd) {                                                     \
                    num += wt[q] * v[q];                                              \
                    den += wt[q];                                                     \
                }                                                                     \
            }                                                                         \
            float x;                                                                  \
            if (den == 16) {                                                          \
                x = (float)num * factor;                                              \
                if (apply_offset) x = x + offset;                                     \
            } else if (den < 8) { /* the own (nearest, 9/16) pixel is nodata */       \
                x = NAN;                                                              \
            } else {                                                                  \
                x = (float)num / (float)den;                                          \
                if (apply_scale) x = x * scale;                                       \
                if (apply_offset) x = x + offset;                                     \
            }                                                                         \
            *(float *)(o + c * os) = x;                                               \
        }                                                                             \
    }

static PyObject *upsample2(PyObject *self, PyObject *args) {
    PyObject *src_obj, *out_obj, *ri_obj, *rf_obj, *ci_obj, *cf_obj;
    long long nodata;
    int has_nodata, apply_scale;
    float scale, offset;
    if (!PyArg_ParseTuple(args, "OOOOOOLpfpf", &src_obj, &out_obj, &ri_obj, &rf_obj, &ci_obj,
                          &cf_obj, &nodata, &has_nodata, &scale, &apply_scale, &offset))
        return NULL;
    Buf src = {0}, out = {0}, ri = {0}, rf = {0}, ci = {0}, cf = {0};
    void *work = NULL;
    if (take2d(src_obj, &src, 0, "hH", "src") < 0 || take2d(out_obj, &out, 1, "f", "out") < 0)
        goto fail;
    Py_ssize_t h = out.view.shape[0], w = out.view.shape[1];
    if (take1d(ri_obj, &ri, 'i', h, "row_index") < 0 || take1d(rf_obj, &rf, 'B', h, "row_far") < 0 ||
        take1d(ci_obj, &ci, 'i', w, "col_index") < 0 || take1d(cf_obj, &cf, 'B', w, "col_far") < 0)
        goto fail;
    if (check_nodata(src.view.format[strlen(src.view.format) - 1], nodata, has_nodata) < 0)
        goto fail;
    const int32_t *ridx = ri.view.buf, *cidx = ci.view.buf;
    const uint8_t *rfar = rf.view.buf, *cfar = cf.view.buf;
    if (h == 0 || w == 0) goto done;
    /* Indexes must stay inside the source (the caller pads it with edge copies). */
    Py_ssize_t jlo = cidx[0], jhi = cidx[0] + 1;
    for (Py_ssize_t c = 0; c < w; c++) {
        if (cidx[c] < 0 || cidx[c] + 1 >= src.view.shape[1]) goto bad_index;
        if (cidx[c] < jlo) jlo = cidx[c];
        if (cidx[c] + 1 > jhi) jhi = cidx[c] + 1;
    }
    for (Py_ssize_t r = 0; r < h; r++)
        if (ridx[r] < 0 || ridx[r] + 1 >= src.view.shape[0]) goto bad_index;
    /* Work rows: vert and bad over the source columns used, sums and flt per phase. */
    size_t ncols = (size_t)(jhi - jlo + 1);
    work = PyMem_RawMalloc(ncols * (sizeof(int32_t) + 1) + (size_t)(w + 2) * sizeof(float));
    if (work == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    int32_t *vert = (int32_t *)work;
    float *flt = (float *)(vert + ncols);
    Py_ssize_t half = (w + 1) / 2;
    uint8_t *bad = (uint8_t *)(flt + 2 * half);
    memset(bad, 0, ncols);
    /* Column phases: targets first, first + 2, ... use sources src, src + 1, ... */
    int nphases = 0;
    Py_ssize_t phase_first[2], phase_count[2], phase_src[2];
    int phase_far[2];
    for (Py_ssize_t f = 0; f < 2 && f < w; f++) {
        Py_ssize_t n = 0;
        for (Py_ssize_t c = f; c < w; c += 2, n++) {
            if (cidx[c] != cidx[f] + n || cfar[c] != cfar[f]) {
                PyErr_SetString(PyExc_ValueError, "col_index is not an upsampling by 2");
                goto fail;
            }
        }
        phase_first[nphases] = f;
        phase_count[nphases] = n;
        phase_src[nphases] = cidx[f];
        phase_far[nphases] = cfar[f];
        nphases++;
    }
    /* Clean pixels: (4 x 4 x value) x (scale / 16), as numpy's exact sums then one
       multiplication; dividing a float32 by 16 is exact. */
    float factor = scale / 16.0f;
    int apply_offset = offset != 0.0f;
    int32_t nd = (int32_t)nodata;
    char kind = src.view.format[strlen(src.view.format) - 1];
    Py_ssize_t os = out.view.strides[1];
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < h; r++) {
        Py_ssize_t i = ridx[r];
        int32_t ra = rfar[r] ? 1 : 3, rb = 4 - ra;
        char *o = (char *)out.view.buf + r * out.view.strides[0];
        if (kind == 'h') UPSAMPLE_ROW(int16_t) else UPSAMPLE_ROW(uint16_t)
    }
    Py_END_ALLOW_THREADS
done:
    PyMem_RawFree(work);
    release(&src); release(&out); release(&ri); release(&rf); release(&ci); release(&cf);
    Py_RETURN_NONE;
bad_index:
    PyErr_SetString(PyExc_IndexError, "an index points outside src");
fail:
    PyMem_RawFree(work);
    release(&src); release(&out); release(&ri); release(&rf); release(&ci); release(&cf);
    return NULL;
}

static PyMethodDef methods[] = {
    {"scale_nodata", scale_nodata, METH_VARARGS,
     "out = src * scale + offset as float32, NaN where src == nodata."},
    {"upsample2", upsample2, METH_VARARGS,
     "Bilinear upsampling by 2 with nodata renormalisation, scaled, into out."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "decloud._kernels",
    "Compiled per-pixel loops of decloud's read path (see decloud/_kernels.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
