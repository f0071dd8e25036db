/*
 * replay_main.c — a stand-in for libFuzzer's main() in builds without
 * libFuzzer (gcc, or clang without KE_FUZZ): every argument is a corpus
 * directory (or a single file), and every regular file in it is read and
 * handed to the harness's LLVMFuzzerTestOneInput, in name order. A harness
 * reports a broken contract by aborting, so the ctest `fuzz/<name>` fails
 * the same way the fuzzer would; under KE_SANITIZE, ASan/UBSan catch the
 * rest. This is how the seed corpus (and every crash input saved next to
 * it) runs in every normal and sanitizer build.
 *
 * Exit status: 0 when every input ran, 1 when an argument could not be
 * read or held no input at all (an empty corpus is a mistake, not a pass).
 */
#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Inputs larger than this are refused: a seed corpus holds small files,
 * and libFuzzer's own default -max_len is 4096. */
#define REPLAY_INPUT_MAX (1024 * 1024)

/* run_file reads path and runs the harness on its bytes. Returns 0 or -1. */
static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    /* One byte of slack detects an input past the bound; the harness gets an
     * exact-size copy so ASan sees a read past its end. */
    uint8_t *buf = malloc(REPLAY_INPUT_MAX + 1);
    size_t n = buf ? fread(buf, 1, REPLAY_INPUT_MAX + 1, f) : 0;
    int bad = !buf || ferror(f) || n > REPLAY_INPUT_MAX;
    fclose(f);
    if (bad) {
        fprintf(stderr, "%s: unreadable or larger than %d bytes\n", path, REPLAY_INPUT_MAX);
        free(buf);
        return -1;
    }
    uint8_t *exact = malloc(n ? n : 1);
    if (!exact) {
        free(buf);
        return -1;
    }
    memcpy(exact, buf, n);
    free(buf);
    fprintf(stderr, "replay %s (%zu bytes)\n", path, n);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* run_dir runs every regular file directly inside dir, in name order.
 * Returns the number run, or -1. */
static int run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        return -1;
    }
    char **paths = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(len);
        struct stat st;
        if (!p) {
            rc = -1;
            break;
        }
        snprintf(p, len, "%s/%s", dir, e->d_name);
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) {
            free(p);
            continue;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **np = realloc(paths, ncap * sizeof(*np));
            if (!np) {
                free(p);
                rc = -1;
                break;
            }
            paths = np;
            cap = ncap;
        }
        paths[n++] = p;
    }
    closedir(d);
    if (n > 0)
        qsort(paths, n, sizeof(*paths), by_name);
    for (size_t i = 0; i < n; i++) {
        if (rc == 0 && run_file(paths[i]) != 0)
            rc = -1;
        free(paths[i]);
    }
    free(paths);
    return rc < 0 ? -1 : (int)n;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 1;
    }
    long total = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            perror(argv[i]);
            return 1;
        }
        int n = S_ISDIR(st.st_mode) ? run_dir(argv[i]) : (run_file(argv[i]) == 0 ? 1 : -1);
        if (n < 0)
            return 1;
        total += n;
    }
    if (total == 0) {
        fprintf(stderr, "no inputs found\n");
        return 1;
    }
    fprintf(stderr, "replayed %ld inputs\n", total);
    return 0;
}
