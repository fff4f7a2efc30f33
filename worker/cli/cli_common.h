/* cli_common.h: what tpctl's own subcommands share: loading the config (file + TP_* env). */
#ifndef TP_CLI_COMMON_H
#define TP_CLI_COMMON_H

#include "tp/config.h"

/* Returns a config with defaults, then path (when not NULL), then the environment applied;
 * prints the error and returns NULL on failure. */
tp_config *tpctl_config_load(const char *path);

/* Subcommands: argv[0] is the subcommand name; they return the exit status. */
int tpctl_cmd_migrate(int argc, char **argv);
int tpctl_cmd_submit(int argc, char **argv);
int tpctl_cmd_status(int argc, char **argv);
int tpctl_cmd_dlq(int argc, char **argv);
int tpctl_cmd_tenant(int argc, char **argv);

#endif
