/*
 * dp_version.c — keeps tg_dp_core a valid library while the data plane's
 * modules arrive one by one (an empty glob would leave CMake with a library
 * of no sources).
 */
#include "dp.h"

const char *tg_dp_version(void)
{
    return TG_VERSION;
}
