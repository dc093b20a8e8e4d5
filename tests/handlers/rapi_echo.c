/* A minimal custom runtime in C (runtime lambda's `bootstrap`): it speaks
 * the Lambda Runtime API at $AWS_LAMBDA_RUNTIME_API over one keep-alive
 * connection and answers every event with the event itself. Blocking
 * sockets, no library: what a lean hand-written bootstrap does (bench
 * invoke-rapi compares it with the native C echo handler). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define HEAD_MAX 16384

static int fd = -1;
static char head[HEAD_MAX + 1];
static size_t have;              /* bytes in head[] past the last answer */

static void die(const char *what)
{
    fprintf(stderr, "rapi_echo: %s\n", what);
    exit(2);
}

static void write_all(const struct iovec *iov, int n)
{
    struct iovec v[4];

    memcpy(v, iov, sizeof(*iov) * (size_t)n);
    while (n > 0) {
        ssize_t w = writev(fd, v, n);
        if (w <= 0)
            die("write");
        while (n > 0 && (size_t)w >= v[0].iov_len) {
            w -= (ssize_t)v[0].iov_len;
            memmove(v, v + 1, sizeof(*v) * (size_t)--n);
        }
        if (n > 0) {
            v[0].iov_base = (char *)v[0].iov_base + w;
            v[0].iov_len -= (size_t)w;
        }
    }
}

/* Read one answer: its head (NUL-terminated in head[]) and its body
 * (malloc'd, *len bytes). */
static char *read_answer(size_t *len, char *id, size_t idsz)
{
    char *end, *p, *body;
    size_t hlen, clen = 0, got;

    for (;;) {
        head[have] = '\0';
        if ((end = strstr(head, "\r\n\r\n")))
            break;
        if (have == HEAD_MAX)
            die("head too long");
        ssize_t r = read(fd, head + have, HEAD_MAX - have);
        if (r <= 0)
            die("read");
        have += (size_t)r;
    }
    hlen = (size_t)(end - head) + 4;
    *end = '\0';
    if (id)
        id[0] = '\0';
    for (p = strstr(head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, "Content-Length:", 15) == 0)
            clen = strtoul(p + 17, NULL, 10);
        else if (id && strncasecmp(p + 2, "Lambda-Runtime-Aws-Request-Id:", 30) == 0) {
            const char *v = p + 32;
            while (*v == ' ')
                v++;
            snprintf(id, idsz, "%.*s", (int)strcspn(v, "\r"), v);
        }
    }
    body = malloc(clen + 1);
    if (!body)
        die("memory");
    got = have - hlen < clen ? have - hlen : clen;
    memcpy(body, head + hlen, got);
    memmove(head, head + hlen + got, have - hlen - got);
    have -= hlen + got;
    while (got < clen) {
        ssize_t r = read(fd, body + got, clen - got);
        if (r <= 0)
            die("read body");
        got += (size_t)r;
    }
    *len = clen;
    return body;
}

int main(void)
{
    const char *api = getenv("AWS_LAMBDA_RUNTIME_API");
    struct sockaddr_in sa = { .sin_family = AF_INET };
    char host[64], id[64], line[256];
    const char *colon;
    int one = 1;

    if (!api || !(colon = strchr(api, ':')) || (size_t)(colon - api) >= sizeof(host))
        die("AWS_LAMBDA_RUNTIME_API is not host:port");
    snprintf(host, sizeof(host), "%.*s", (int)(colon - api), api);
    sa.sin_port = htons((unsigned short)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        die("bad host");
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        die("cannot connect to the Runtime API");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    for (;;) {
        static const char next[] = "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\n"
                                   "Host: rapi\r\n\r\n";
        struct iovec v[2];
        size_t elen, alen;
        char *ev, *ans;
        int n;

        v[0] = (struct iovec){ (void *)next, sizeof(next) - 1 };
        write_all(v, 1);
        ev = read_answer(&elen, id, sizeof(id));
        n = snprintf(line, sizeof(line), "POST /2018-06-01/runtime/invocation/%s/response "
                     "HTTP/1.1\r\nHost: rapi\r\nContent-Length: %zu\r\n\r\n", id, elen);
        v[0] = (struct iovec){ line, (size_t)n };
        v[1] = (struct iovec){ ev, elen };
        write_all(v, 2);
        free(ev);
        ans = read_answer(&alen, NULL, 0);
        free(ans);
    }
}
