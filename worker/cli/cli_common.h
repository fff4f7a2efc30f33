/* cli_common.h: what tpctl's own subcommands share: loading the config (file + TP_* env) and
 * parsing option values. */
#ifndef TP_CLI_COMMON_H
#define TP_CLI_COMMON_H

#include "tp/config.h"
#include "tp/request.h"

/* Returns a config with defaults, then path (when not NULL), then the environment applied;
 * prints the error and returns NULL on failure. */
tp_config *tpctl_config_load(const char *path);

/* A whole decimal integer in [min, max] into *out; 0, or -1 when s is not one. */
int tpctl_parse_ll(const char *s, long long min, long long max, long long *out);
/* The comma-separated roles of csv into actor; 0, or -1 when there are too many or one is too
 * long. */
int tpctl_set_roles(tp_actor *actor, const char *csv);

/* Subcommands: argv[0] is the subcommand name; they return the exit status. */
int tpctl_cmd_migrate(int argc, char **argv);
int tpctl_cmd_submit(int argc, char **argv);
int tpctl_cmd_status(int argc, char **argv);
int tpctl_cmd_dlq(int argc, char **argv);
int tpctl_cmd_tenant(int argc, char **argv);

#endif
