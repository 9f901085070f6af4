#include "cp.h"
#include "error.h"

#include <stdio.h>

int tg_cp_cmd_start(int argc, char **argv)
{
    fprintf(stderr, "tollgate: cp start: not built yet\n");
    return -TG_EUNSUPPORTED;
}

int tg_cp_cmd_migrate(int argc, char **argv)
{
    fprintf(stderr, "tollgate: cp migrate: not built yet\n");
    return -TG_EUNSUPPORTED;
}

int tg_cp_cmd_admin_token(int argc, char **argv)
{
    fprintf(stderr, "tollgate: cp admin-token: not built yet\n");
    return -TG_EUNSUPPORTED;
}
