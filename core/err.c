/* Error code table: text and names both come from SL_ERRNO_MAP. */
#include <stdio.h>
#include <string.h>

#include "sluice/err.h"

static const char *const err_text[] = {
#define X(name, text) text,
    SL_ERRNO_MAP(X)
#undef X
};

static const char *const err_name[] = {
#define X(name, text) "SL_E" #name,
    SL_ERRNO_MAP(X)
#undef X
};

#define ERR_COUNT ((int)(sizeof(err_text) / sizeof(err_text[0])))

/* The #defines in err.h must match the list order; checked at compile time. */
_Static_assert(SL__E_INTERNAL_IDX == -SL_EINTERNAL, "SL_E* codes out of sync with SL_ERRNO_MAP");
_Static_assert(SL__E_NOMEM_IDX == -SL_ENOMEM, "SL_E* codes out of sync with SL_ERRNO_MAP");
_Static_assert(SL__E_PROTO_IDX == -SL_EPROTO, "SL_E* codes out of sync with SL_ERRNO_MAP");

const char *sl_strerror(int code)
{
    if (code == 0)
        return "success";
    if (code < 0 && -code <= ERR_COUNT)
        return err_text[-code - 1];
    return "unknown error";
}

const char *sl_errname(int code)
{
    if (code == 0)
        return "SL_EOK";
    if (code < 0 && -code <= ERR_COUNT)
        return err_name[-code - 1];
    return "SL_E?";
}

void sl_err_clear(struct sl_err *err)
{
    if (!err)
        return;
    err->code = 0;
    err->retriable = false;
    err->msg[0] = '\0';
}

int sl_err_set(struct sl_err *err, int code, bool retriable, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return code;
    err->code = code;
    err->retriable = retriable;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return code;
}
