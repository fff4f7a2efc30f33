/* tpctl: the operator and developer command line: one table of subcommands. */
#include "cli/cli.h"
#include "cli/cli_common.h"

#include <stdio.h>
#include <string.h>

int tpctl_cmd_token(int argc, char **argv);

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
    {"migrate", tpctl_cmd_migrate, "apply schemas/sql migrations to pg.dsn"},
    {"submit", tpctl_cmd_submit, "encode and produce ProvisioningRequest records (as billing does)"},
    {"status", tpctl_cmd_status, "print a request's state and stage conditions as JSON"},
    {"tenant", tpctl_cmd_tenant, "tenant get/list/history; plan/suspend/resume/deprovision as billing"},
    {"dlq", tpctl_cmd_dlq, "list dead letters, or replay one (dlq list | dlq replay ID)"},
    {"keygen", tpctl_cmd_keygen, "write an Ed25519 receipt signing key pair and key set entry"},
    {"receipts", tpctl_cmd_receipts, "verify or tail provenance receipts"},
    {"token", tpctl_cmd_token, "mint a development bearer token"},
};

static void usage(FILE *out) {
    fprintf(out, "usage: tpctl <command> [options]   (tpctl <command> --help for its options)\n\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].help);
    fprintf(out, "\nEvery command takes --config FILE; TP_* environment variables override it.\n");
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("tpctl %s\n", TP_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "tpctl: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}
