/* err.c - lookups over the error table in err.h. */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    int code;
    int http;
    const char *name, *api, *msg;
} err_entry;

static const err_entry err_table[] = {
#define PL_ERR_ROW(name, val, http, api, msg) {val, http, #name, api, msg},
    PL_ERRNO_MAP(PL_ERR_ROW)
#undef PL_ERR_ROW
};

static const err_entry *err_find(int code)
{
    for (size_t i = 0; i < sizeof err_table / sizeof err_table[0]; i++)
        if (err_table[i].code == code)
            return &err_table[i];
    for (size_t i = 0; i < sizeof err_table / sizeof err_table[0]; i++)
        if (err_table[i].code == PL_EINTERNAL)
            return &err_table[i];
    return &err_table[0];
}

const char *err_name(int code) { return code == PL_OK ? "PL_OK" : err_find(code)->name; }
const char *err_message(int code) { return code == PL_OK ? "ok" : err_find(code)->msg; }
int err_http_status(int code) { return code == PL_OK ? 200 : err_find(code)->http; }
const char *err_api_code(int code) { return code == PL_OK ? "ok" : err_find(code)->api; }

int err_set(pl_error *e, int code, const char *field, const char *fmt, ...)
{
    if (!e)
        return code;
    e->code = code;
    snprintf(e->field, sizeof e->field, "%s", field ? field : "");
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    } else {
        snprintf(e->msg, sizeof e->msg, "%s", err_message(code));
    }
    return code;
}
