/* tpctl: operator and developer command line (argument parsing; the component fills in the rest). */
#include <stdio.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out, "usage: tpctl [--config FILE] [--help] [--version]\n"
                 "  operator and developer command line\n");
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("tpctl %s\n", TP_VERSION);
            return 0;
        }
    }
    usage(stderr);
    return 2;
}
