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
