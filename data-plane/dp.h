/*
 * dp.h — the data plane's entry points (called by app/main.c).
 */
#ifndef TG_DP_H
#define TG_DP_H

/* The data plane's version string. */
const char *tg_dp_version(void);

#endif
