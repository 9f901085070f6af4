#include "error.h"

const char *tg_strerror(int err)
{
    switch (err < 0 ? -err : err) {
#define XX(name, num, msg)                                                                         \
    case num:                                                                                      \
        return msg;
        TG_ERRNO_MAP(XX)
#undef XX
    case 0:
        return "success";
    default:
        return "unknown error";
    }
}

const char *tg_errname(int err)
{
    switch (err < 0 ? -err : err) {
#define XX(name, num, msg)                                                                         \
    case num:                                                                                      \
        return "TG_E" #name;
        TG_ERRNO_MAP(XX)
#undef XX
    case 0:
        return "OK";
    default:
        return "TG_EUNKNOWN";
    }
}

int tg_api_error_status(int code)
{
    switch (code) {
#define XX(name, num, status, kname)                                                               \
    case num:                                                                                      \
        return status;
        TG_API_ERROR_MAP(XX)
#undef XX
    default:
        return 500;
    }
}

const char *tg_api_error_name(int code)
{
    switch (code) {
#define XX(name, num, status, kname)                                                               \
    case num:                                                                                      \
        return kname;
        TG_API_ERROR_MAP(XX)
#undef XX
    default:
        return "database error";
    }
}
