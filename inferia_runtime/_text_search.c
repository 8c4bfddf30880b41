/* The compiled forms of `inferia_runtime.text_search.found_among` (which of many byte strings occur in a text, in
 * one pass over it instead of one search per string), `counted_among` (how often each of a few byte strings occurs,
 * as `bytes.count` counts) and `digit_runs` (where each run of decimal digits starts). text_search.py holds the
 * meaning; this file only its speed, and the tests hold the two to the same answers. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define PAIRS (256 * 256)

/* Whether the arguments are a text and its needles: bytes, and a tuple of bytes (a TypeError naming `call` if not). */
static int
text_and_needles(PyObject *const *args, Py_ssize_t nargs, const char *call)
{
    int valid = nargs == 2 && PyBytes_Check(args[0]) && PyTuple_Check(args[1]);
    for (Py_ssize_t j = 0; valid && j < PyTuple_GET_SIZE(args[1]); j++) {
        valid = PyBytes_Check(PyTuple_GET_ITEM(args[1], j));
    }
    if (!valid) {
        PyErr_Format(PyExc_TypeError, "%s(text, needles) takes bytes and a tuple of bytes", call);
    }
    return valid;
}

static PyObject *
found_among(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!text_and_needles(args, nargs, "found_among")) {
        return NULL;
    }
    PyObject *needles = args[1];
    Py_ssize_t count = PyTuple_GET_SIZE(needles);
    PyObject *result = PyBytes_FromStringAndSize(NULL, count);
    if (result == NULL) {
        return NULL;
    }
    char *found = PyBytes_AS_STRING(result);
    memset(found, 0, count);
    /* Needles chained by their first byte; a bit per two-byte start, so that most positions cost one test. */
    Py_ssize_t *next = PyMem_Malloc(sizeof(Py_ssize_t) * (count ? count : 1));
    unsigned char *pairs = PyMem_Calloc(PAIRS / 8, 1);
    if (next == NULL || pairs == NULL) {
        PyMem_Free(next);
        PyMem_Free(pairs);
        Py_DECREF(result);
        return PyErr_NoMemory();
    }
    Py_ssize_t first[256];
    unsigned char single[256];
    for (int b = 0; b < 256; b++) {
        first[b] = -1;
        single[b] = 0;
    }
    Py_ssize_t missing = 0;
    for (Py_ssize_t j = count - 1; j >= 0; j--) {
        PyObject *needle = PyTuple_GET_ITEM(needles, j);
        const unsigned char *n = (const unsigned char *)PyBytes_AS_STRING(needle);
        Py_ssize_t size = PyBytes_GET_SIZE(needle);
        if (size == 0) {
            found[j] = 1; /* as `b"" in text` */
            continue;
        }
        missing++;
        next[j] = first[n[0]];
        first[n[0]] = j;
        if (size == 1) {
            single[n[0]] = 1;
        }
        else {
            unsigned int pair = (n[0] << 8) | n[1];
            pairs[pair >> 3] |= (unsigned char)(1 << (pair & 7));
        }
    }
    const unsigned char *text = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t text_size = PyBytes_GET_SIZE(args[0]);
    for (Py_ssize_t i = 0; i < text_size && missing; i++) {
        unsigned char c = text[i];
        if (!single[c]) {
            if (i + 1 >= text_size) {
                break;
            }
            unsigned int pair = (c << 8) | text[i + 1];
            if (!(pairs[pair >> 3] & (1 << (pair & 7)))) {
                continue;
            }
        }
        for (Py_ssize_t j = first[c]; j != -1; j = next[j]) {
            if (found[j]) {
                continue;
            }
            PyObject *needle = PyTuple_GET_ITEM(needles, j);
            Py_ssize_t size = PyBytes_GET_SIZE(needle);
            if (size <= text_size - i && memcmp(text + i, PyBytes_AS_STRING(needle), size) == 0) {
                found[j] = 1;
                missing--;
            }
        }
    }
    PyMem_Free(next);
    PyMem_Free(pairs);
    return result;
}

/* `bytes.count` of each needle, by the C library's memmem: several times the speed of CPython's own search on the
 * streams the gateway relays, where a needle's bytes are common (quotes, letters) and its occurrences few. */
static PyObject *
counted_among(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (!text_and_needles(args, nargs, "counted_among")) {
        return NULL;
    }
    PyObject *needles = args[1];
    Py_ssize_t count = PyTuple_GET_SIZE(needles);
    const char *text = PyBytes_AS_STRING(args[0]);
    const char *end = text + PyBytes_GET_SIZE(args[0]);
    PyObject *result = PyTuple_New(count);
    if (result == NULL) {
        return NULL;
    }
    for (Py_ssize_t j = 0; j < count; j++) {
        PyObject *needle = PyTuple_GET_ITEM(needles, j);
        const char *n = PyBytes_AS_STRING(needle);
        Py_ssize_t size = PyBytes_GET_SIZE(needle);
        Py_ssize_t found = 0;
        if (size == 0) {
            found = (end - text) + 1; /* as `bytes.count(b"")`: each position, the end included */
        }
        else {
            const char *at = text;
            while (end - at >= size && (at = memmem(at, end - at, n, size)) != NULL) {
                found++;
                at += size;
            }
        }
        PyObject *number = PyLong_FromSsize_t(found);
        if (number == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyTuple_SET_ITEM(result, j, number);
    }
    return result;
}

static int
add_start(PyObject *starts, Py_ssize_t index)
{
    PyObject *number = PyLong_FromSsize_t(index);
    if (number == NULL) {
        return -1;
    }
    int failed = PyList_Append(starts, number);
    Py_DECREF(number);
    return failed;
}

/* A decimal digit as the regular expressions' \d takes one in a str pattern (Unicode category Nd). */
static inline int
is_digit(Py_UCS4 c)
{
    return c < 128 ? (c >= '0' && c <= '9') : Py_UNICODE_ISDECIMAL(c);
}

static PyObject *
digit_runs(PyObject *module, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "digit_runs(text) takes a str");
        return NULL;
    }
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t size = PyUnicode_GET_LENGTH(text);
    PyObject *starts = PyList_New(0);
    if (starts == NULL) {
        return NULL;
    }
    int in_run = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        int digit = is_digit(PyUnicode_READ(kind, data, i));
        if (digit && !in_run && add_start(starts, i) < 0) {
            Py_DECREF(starts);
            return NULL;
        }
        in_run = digit;
    }
    return starts;
}

static PyMethodDef methods[] = {
    {"found_among", (PyCFunction)(void (*)(void))found_among, METH_FASTCALL,
     "found_among(text, needles): bytes with a 1 for each needle that occurs in text, a 0 for each that does not."},
    {"counted_among", (PyCFunction)(void (*)(void))counted_among, METH_FASTCALL,
     "counted_among(text, needles): a tuple of how often each needle occurs in text, as bytes.count counts."},
    {"digit_runs", (PyCFunction)digit_runs, METH_O,
     "digit_runs(text): the index in text of the first digit of each run of decimal digits, in order."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "inferia_runtime._text_search", NULL, 0, methods,
};

PyMODINIT_FUNC
PyInit__text_search(void)
{
    return PyModule_Create(&module);
}
