/* The compiled form of `inferia_runtime.json_copy.string_between`: the same check, in one call and one pass over the
 * bytes, for the streams whose every token it is asked about. json_copy.py holds the meaning; this file only its
 * speed, and the tests hold the two to the same answers. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Whether s[0..n) is one JSON string, quotes included, as json_copy._JSON_STRING_PATTERN takes it: no raw quote,
 * backslash or control character inside, a backslash escaping any byte but a newline. */
static int
is_json_string(const unsigned char *s, Py_ssize_t n)
{
    if (n < 2 || s[0] != '"' || s[n - 1] != '"') {
        return 0;
    }
    Py_ssize_t end = n - 1; /* the closing quote */
    for (Py_ssize_t i = 1; i < end; i++) {
        unsigned char c = s[i];
        if (c == '\\') {
            /* The escaped byte must come before the closing quote: one that escapes it leaves the string open. */
            if (i + 1 >= end || s[i + 1] == '\n') {
                return 0;
            }
            i++;
        }
        else if (c == '"' || c < 0x20) {
            return 0;
        }
    }
    return 1;
}

static PyObject *
string_between(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "string_between(data, head, tail) takes three bytes");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < 3; i++) {
        if (!PyBytes_Check(args[i])) {
            PyErr_SetString(PyExc_TypeError, "string_between(data, head, tail) takes three bytes");
            return NULL;
        }
    }
    const char *data = PyBytes_AS_STRING(args[0]);
    const char *head = PyBytes_AS_STRING(args[1]);
    const char *tail = PyBytes_AS_STRING(args[2]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t head_size = PyBytes_GET_SIZE(args[1]);
    Py_ssize_t tail_size = PyBytes_GET_SIZE(args[2]);
    if (size < head_size + tail_size + 2 || memcmp(data, head, head_size) != 0 ||
        memcmp(data + size - tail_size, tail, tail_size) != 0) {
        Py_RETURN_NONE;
    }
    const char *string = data + head_size;
    Py_ssize_t string_size = size - head_size - tail_size;
    if (!is_json_string((const unsigned char *)string, string_size)) {
        Py_RETURN_NONE;
    }
    return PyBytes_FromStringAndSize(string, string_size);
}

static PyMethodDef methods[] = {
    {"string_between", (PyCFunction)(void (*)(void))string_between, METH_FASTCALL,
     "string_between(data, head, tail): the JSON string between head and tail (quotes included) when data is "
     "exactly the three, else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "inferia_runtime._json_copy", NULL, 0, methods,
};

PyMODINIT_FUNC
PyInit__json_copy(void)
{
    return PyModule_Create(&module);
}
