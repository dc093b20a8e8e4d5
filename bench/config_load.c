/* bench config-load: parse and validate a 1,000-source configuration.
 * Baseline: reading the same file into memory, measured in the same run.
 * Prints one BENCH line; value and baseline are microseconds per pass. */
#include "bench.h"

#define SOURCES   1000
#define FUNCTIONS 20

static void write_config(const char *path)
{
    FILE *f = fopen(path, "w");

    if (!f) {
        perror(path);
        exit(1);
    }
    fprintf(f, "functions:\n");
    for (int i = 0; i < FUNCTIONS; i++)
        fprintf(f, "  fn-%d:\n    handler: /bin/true\n    memory_mb: 256MB\n    timeout_s: 30\n"
                   "    environment: { STAGE: bench, INDEX: \"%d\" }\n"
                   "    async: { maximum_retry_attempts: 2, on_failure: dlq }\n", i, i);
    fprintf(f, "sources:\n");
    for (int i = 0; i < SOURCES; i++) {
        switch (i % 3) {
        case 0:
            fprintf(f, "  src-%d:\n    type: kafka\n    function: fn-%d\n"
                       "    brokers: ${BENCH_BROKERS:-127.0.0.1:9092}\n    topics: [orders-%d]\n"
                       "    batch_size: 500\n    maximum_batching_window_ms: 200ms\n"
                       "    bisect_batch_on_function_error: true\n"
                       "    filter_criteria: [ { value: { type: [order], n: [ { numeric: ['>', %d] } ] } } ]\n"
                       "    on_failure: dlq\n", i, i % FUNCTIONS, i, i);
            break;
        case 1:
            fprintf(f, "  src-%d:\n    type: redis\n    function: fn-%d\n"
                       "    url: redis://127.0.0.1:6379/0\n    key: jobs:%d\n    mode: list\n"
                       "    visibility_timeout_s: 45s\n    max_receive_count: 5\n"
                       "    on_failure: dlq\n", i, i % FUNCTIONS, i);
            break;
        default:
            fprintf(f, "  src-%d:\n    type: postgres\n    function: fn-%d\n"
                       "    dsn: 'host=127.0.0.1 dbname=app'\n    tables: [public.t%d]\n"
                       "    maximum_record_age_s: 1h\n    on_failure: dlq\n", i, i % FUNCTIONS, i);
            break;
        }
    }
    fprintf(f, "sinks:\n  dlq: { type: redis, url: redis://127.0.0.1:6379, key: dlq }\n"
               "server: { listen: 127.0.0.1:9001 }\n");
    fclose(f);
}

static void read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    ssize_t n;
    size_t len = 0;

    while ((n = read(fd, buf + len, cap - len)) > 0)
        len += (size_t)n;
    close(fd);
    if (len == 0)
        abort();
}

int main(void)
{
    char path[] = "/tmp/sluice-bench-config-XXXXXX";
    int fd = mkstemp(path), passes = 0;
    double t0, load_us, read_us;
    size_t cap = 8 << 20;
    char *buf = malloc(cap);

    close(fd);
    write_config(path);

    /* correctness first: the file must load */
    {
        struct sl_diags d;
        struct sl_config *c = NULL;
        sl_diags_init(&d, path);
        if (sl_config_load(path, &sl_registry, &c, &d) != 0 || c->nsources != SOURCES) {
            sl_diags_print(&d, stderr);
            return 1;
        }
        sl_config_free(c);
        sl_diags_destroy(&d);
    }

    /* time-boxed: enough passes for ~2 s of loading */
    t0 = now_us();
    while (now_us() - t0 < 2e6 || passes < 5) {
        struct sl_diags d;
        struct sl_config *c = NULL;
        sl_diags_init(&d, path);
        sl_config_load(path, &sl_registry, &c, &d);
        sl_config_free(c);
        sl_diags_destroy(&d);
        passes++;
    }
    load_us = (now_us() - t0) / passes;

    t0 = now_us();
    for (int i = 0; i < passes * 50; i++)
        read_file(path, buf, cap);
    read_us = (now_us() - t0) / (passes * 50);

    unlink(path);
    free(buf);
    printf("config-load: %d sources, %d passes, %.1f us per load, %.1f us per read\n", SOURCES,
           passes, load_us, read_us);
    bench_report(&(struct bench_result){ .name = "config-load", .value = load_us, .unit = "us",
                                         .baseline = "read-file", .baseline_value = read_us,
                                         .digits = { 1, 2, 1 } });
    return 0;
}
