#include "log.h"
#include "error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum tg_log_level current_level = TG_LOG_INFO;
static const char *level_names[] = {"debug", "info", "notice", "warn", "error"};

int tg_log_set_level_name(const char *name)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(name, level_names[i]) == 0) {
            current_level = (enum tg_log_level)i;
            return 0;
        }
    }
    return -TG_EINVAL;
}

void tg_log_set_level(enum tg_log_level level)
{
    current_level = level;
}

int tg_log_enabled(enum tg_log_level level)
{
    return level >= current_level;
}

__attribute__((format(printf, 3, 0))) static void vlog(enum tg_log_level level, const char *module,
                                                    const char *fmt, va_list ap)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], module);
    if (n < 0) return;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2) len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void tg_log(enum tg_log_level level, const char *module, const char *fmt, ...)
{
    if (level < current_level) return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, module, fmt, ap);
    va_end(ap);
}

_Noreturn void tg_fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(TG_LOG_ERROR, "fatal", fmt, ap);
    va_end(ap);
    abort();
}
