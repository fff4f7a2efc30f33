/* tp-worker: consume provisioning requests and run the stages (argument parsing; the component fills in the rest). */
#include <stdio.h>
#include <string.h>

static void usage(FILE *out) {
    fprintf(out, "usage: tp-worker [--config FILE] [--help] [--version]\n"
                 "  consume provisioning requests and run the stages\n");
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("tp-worker %s\n", TP_VERSION);
            return 0;
        }
    }
    usage(stderr);
    return 2;
}
