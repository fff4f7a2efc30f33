/* error.c: names, messages and the transient flag of the error codes in include/tp/error.h. */
#include "tp/error.h"

#include <stddef.h>

typedef struct err_info {
    const char *name;
    const char *msg;
    bool transient;
} err_info;

static const err_info err_table[] = {
#define TP_ERR_ROW(name, transient, msg) {"TP_E" #name, msg, transient},
    TP_ERRNO_MAP(TP_ERR_ROW)
#undef TP_ERR_ROW
};

static const err_info *lookup(int err) {
    int idx = err - (TP_ERR_FIRST_ + 1);
    if (idx < 0 || (size_t)idx >= sizeof(err_table) / sizeof(err_table[0]))
        return NULL;
    return &err_table[idx];
}

const char *tp_err_name(int err) {
    const err_info *e;
    if (err == TP_OK)
        return "TP_OK";
    e = lookup(err);
    return e ? e->name : "TP_EUNKNOWN";
}

const char *tp_strerror(int err) {
    const err_info *e;
    if (err == TP_OK)
        return "success";
    e = lookup(err);
    return e ? e->msg : "unknown error";
}

bool tp_err_is_transient(int err) {
    const err_info *e = lookup(err);
    return e ? e->transient : false;
}
