/*
 * log.h — leveled logging to stderr, one line per event.
 *
 * Thread-safe (each line is written with one write(2)). The level is process
 * wide and set once at start-up from the `log_level` configuration key.
 */
#ifndef TG_LOG_H
#define TG_LOG_H

enum tg_log_level { TG_LOG_DEBUG, TG_LOG_INFO, TG_LOG_NOTICE, TG_LOG_WARN, TG_LOG_ERROR };

/* Parses "debug|info|notice|warn|error"; returns -TG_EINVAL for anything else. */
int tg_log_set_level_name(const char *name);
void tg_log_set_level(enum tg_log_level level);
int tg_log_enabled(enum tg_log_level level);
void tg_log(enum tg_log_level level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Logs the message and aborts: for out-of-memory and broken invariants only. */
_Noreturn void tg_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define TG_LOGD(mod, ...) tg_log(TG_LOG_DEBUG, mod, __VA_ARGS__)
#define TG_LOGI(mod, ...) tg_log(TG_LOG_INFO, mod, __VA_ARGS__)
#define TG_LOGN(mod, ...) tg_log(TG_LOG_NOTICE, mod, __VA_ARGS__)
#define TG_LOGW(mod, ...) tg_log(TG_LOG_WARN, mod, __VA_ARGS__)
#define TG_LOGE(mod, ...) tg_log(TG_LOG_ERROR, mod, __VA_ARGS__)

#endif
