/* sluice_runtime: the handler side of sluice's native protocol (docs/PROTOCOL.md).
 *
 * One process, one thread, one socket (fd 3). Frames are read with
 * recvmsg() one exact piece at a time (header, then body) so that the
 * descriptors sluice attaches to a `fork` frame are always collected, never
 * read past. Anything malformed from sluice ends the process with a line on
 * stderr: the stream cannot be resynchronised and sluice discards the
 * environment anyway. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* struct ucred, SCM_CREDENTIALS, dup3, vasprintf */
#endif

#include "sluice_runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <msgpack.h>

#define RT_FDS_MAX    8            /* descriptors held between frames; `fork` brings 3 */
#define RT_TYPE_MAX   256          /* error_type bytes kept */
#define RT_MSG_MAX    (256 * 1024) /* error_message bytes kept, so an error frame fits */
#define RT_EOF        1            /* read_frame(): the stream ended between frames */

/* ------------------------------------------------------------------ */
/* State: the one runtime root                                         */

struct hook {
    slr_hook_fn fn;
    void       *arg;
};

static struct {
    int              fd;                       /* protocol socket, fd 3 */
    int              snapshotted;              /* template: no more invokes */
    int              chld_ignored;             /* template: SIGCHLD set to SIG_IGN */
    struct sigaction chld_old;                 /* restored in each forked child */
    struct hook      before[SLR_HOOKS_MAX];
    size_t           nbefore;
    struct hook      after[SLR_HOOKS_MAX];
    size_t           nafter;
    char             err_type[RT_TYPE_MAX];    /* "" when unset */
    char            *err_msg;                  /* owned, NULL when unset */
    int              fds[RT_FDS_MAX];          /* received, not yet claimed by a fork */
    size_t           nfds;
    char            *body;                     /* owned, the last frame body read */
    size_t           body_cap;
} rt = {.fd = 3};

/* sluice says where the socket is; 3 unless told otherwise. */
static int runtime_fd(void)
{
    const char *env = getenv("SLUICE_RUNTIME_FD");
    char *end;
    long fd;

    if (!env || !*env)
        return 3;
    fd = strtol(env, &end, 10);
    return *end || fd < 0 || fd > INT32_MAX ? 3 : (int)fd;
}

/* Protocol and I/O failures end the process, so they are explained here,
 * once, where they are detected. Returns -EPROTO for `return fail(...)`. */
__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...)
{
    va_list ap;

    fputs("sluice_runtime: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return -EPROTO;
}

/* Out of memory in a handler process: nothing sensible to report over the
 * wire, and sluice turns the exit into Runtime.ExitError. */
static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p) {
        fprintf(stderr, "sluice_runtime: out of memory (%zu bytes)\n", n);
        abort();
    }
    return p;
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void clear_error(void)
{
    rt.err_type[0] = '\0';
    free(rt.err_msg);
    rt.err_msg = NULL;
}

static void set_error_v(const char *type, const char *fmt, va_list ap)
{
    char *msg = NULL;

    /* No type: whoever reports the failure fills in its own default. */
    snprintf(rt.err_type, sizeof rt.err_type, "%s", type ? type : "");
    free(rt.err_msg);
    rt.err_msg = NULL;
    if (fmt && vasprintf(&msg, fmt, ap) >= 0) {
        if (strlen(msg) > RT_MSG_MAX)
            msg[RT_MSG_MAX] = '\0';
        rt.err_msg = msg;
    }
}

int slr_set_error(const char *type, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    set_error_v(type, fmt, ap);
    va_end(ap);
    return -1;
}

int64_t slr_remaining_ms(const struct slr_context *ctx)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return ctx->deadline_ms - ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

static int add_hook(struct hook *v, size_t *n, slr_hook_fn fn, void *arg)
{
    if (!fn)
        return -EINVAL;
    if (*n >= SLR_HOOKS_MAX)
        return -ENOSPC;
    v[*n].fn = fn;
    v[*n].arg = arg;
    (*n)++;
    return 0;
}

int slr_on_before_snapshot(slr_hook_fn fn, void *arg)
{
    return add_hook(rt.before, &rt.nbefore, fn, arg);
}

int slr_on_after_restore(slr_hook_fn fn, void *arg)
{
    return add_hook(rt.after, &rt.nafter, fn, arg);
}

/* ------------------------------------------------------------------ */
/* Reading frames                                                      */

/* Keep every descriptor that came with the bytes just read: sluice
 * attaches three to a `fork` frame, and the kernel hands them over with
 * whichever read first touches that frame. */
static int take_fds(struct msghdr *mh)
{
    struct cmsghdr *c;

    if (mh->msg_flags & MSG_CTRUNC)
        return fail("control data from sluice was truncated (descriptors lost)");
    for (c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        size_t i, n;

        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (i = 0; i < n; i++) {
            int fd;

            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (rt.nfds == RT_FDS_MAX) {
                close(fd);
                return fail("sluice sent more than %d descriptors", RT_FDS_MAX);
            }
            rt.fds[rt.nfds++] = fd;
        }
    }
    return 0;
}

/* Read exactly n bytes. Returns 0, RT_EOF when the stream ends before the
 * first byte and `eof_ok`, or a negative error. */
static int read_exact(void *p, size_t n, int eof_ok)
{
    size_t got = 0;

    while (got < n) {
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(int) * RT_FDS_MAX)];
        } cm;
        struct iovec iov = {.iov_base = (char *)p + got, .iov_len = n - got};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1,
                            .msg_control = cm.b, .msg_controllen = sizeof cm.b};
        ssize_t r = recvmsg(rt.fd, &mh, MSG_CMSG_CLOEXEC);
        int rc;

        if (r < 0) {
            if (errno == EINTR)
                continue;
            return fail("cannot read from sluice: %s", strerror(errno));
        }
        if ((rc = take_fds(&mh)) < 0)
            return rc;
        if (r == 0) {
            if (got == 0 && eof_ok)
                return RT_EOF;
            return fail("sluice closed the socket mid-frame (%zu of %zu bytes)", got, n);
        }
        got += (size_t)r;
    }
    return 0;
}

/* Read one frame into rt.body and unpack its single map into `up`.
 * Objects in `up` point into rt.body until the next read. Returns 0,
 * RT_EOF, or a negative error. */
static int read_frame(msgpack_unpacked *up, size_t *len)
{
    unsigned char hdr[4];
    size_t off = 0;
    uint32_t n;
    int rc;

    if ((rc = read_exact(hdr, sizeof hdr, 1)) != 0)
        return rc;
    n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    if (n > SLR_FRAME_MAX)
        return fail("frame of %u bytes from sluice is past the %d-byte cap", n, SLR_FRAME_MAX);
    if (n == 0)
        return fail("empty frame from sluice");
    if (n > rt.body_cap) {
        free(rt.body);
        rt.body = xmalloc(n);
        rt.body_cap = n;
    }
    if ((rc = read_exact(rt.body, n, 0)) != 0)
        return rc;
    *len = n;
    switch (msgpack_unpack_next(up, rt.body, n, &off)) {
    case MSGPACK_UNPACK_SUCCESS:
        break;
    case MSGPACK_UNPACK_EXTRA_BYTES:
        return fail("frame from sluice holds bytes after its map");
    case MSGPACK_UNPACK_NOMEM_ERROR:
        /* msgpack-c says this for nesting past its fixed stack, too. */
        return fail("cannot unpack a frame from sluice: nested too deeply or out of memory");
    default:
        return fail("frame from sluice is not valid msgpack");
    }
    if (off != n)
        return fail("frame from sluice holds bytes after its map");
    if (up->data.type != MSGPACK_OBJECT_MAP)
        return fail("frame from sluice is not a map");
    return 0;
}

/* ------------------------------------------------------------------ */
/* Fields of a map                                                      */

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
    size_t klen = strlen(key);
    uint32_t i;

    for (i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;

        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            memcmp(k->via.str.ptr, key, klen) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

/* A str (or, with `bin_ok`, bin) field. Missing or nil gives NULL/0 and
 * returns 0 unless `required`; a wrong type is a protocol violation. */
static int get_bytes(const msgpack_object *map, const char *key, int required, int bin_ok,
                     const char **p, size_t *n)
{
    const msgpack_object *v = map_get(map, key);

    *p = NULL;
    *n = 0;
    if (!v || v->type == MSGPACK_OBJECT_NIL) {
        if (required)
            return fail("message from sluice lacks `%s`", key);
        return 0;
    }
    if (v->type == MSGPACK_OBJECT_STR) {
        *p = v->via.str.ptr;
        *n = v->via.str.size;
    } else if (bin_ok && v->type == MSGPACK_OBJECT_BIN) {
        *p = v->via.bin.ptr;
        *n = v->via.bin.size;
    } else {
        return fail("`%s` from sluice has the wrong type", key);
    }
    return 0;
}

/* An integer field; missing or nil leaves *out alone. */
static int get_int(const msgpack_object *map, const char *key, int64_t *out)
{
    const msgpack_object *v = map_get(map, key);

    if (!v || v->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER && v->via.u64 <= INT64_MAX)
        *out = (int64_t)v->via.u64;
    else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *out = v->via.i64;
    else
        return fail("`%s` from sluice is not an integer", key);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Writing frames                                                      */

/* A frame under construction: 4 header bytes, then the map. */
struct out {
    msgpack_sbuffer sb;
    msgpack_packer  pk;
};

/* msgpack_sbuffer_write with xmalloc's policy: a frame that silently lost
 * bytes would be worse than no frame. */
static int sbuf_write(void *data, const char *buf, size_t len)
{
    if (msgpack_sbuffer_write(data, buf, len) < 0) {
        fprintf(stderr, "sluice_runtime: out of memory building a frame (%zu bytes)\n",
                ((msgpack_sbuffer *)data)->size + len);
        abort();
    }
    return 0;
}

static void out_init(struct out *o, size_t nkeys, const char *type)
{
    static const char zero[4];

    msgpack_sbuffer_init(&o->sb);
    msgpack_packer_init(&o->pk, &o->sb, sbuf_write);
    sbuf_write(&o->sb, zero, sizeof zero);
    msgpack_pack_map(&o->pk, nkeys);
    msgpack_pack_str_with_body(&o->pk, "type", 4);
    msgpack_pack_str_with_body(&o->pk, type, strlen(type));
}

static void out_str(struct out *o, const char *key, const char *val)
{
    msgpack_pack_str_with_body(&o->pk, key, strlen(key));
    msgpack_pack_str_with_body(&o->pk, val, strlen(val));
}

static void out_destroy(struct out *o)
{
    msgpack_sbuffer_destroy(&o->sb);
}

/* Send the frame, whole: partial writes resume, EINTR retries. With
 * `creds`, the first sendmsg carries SCM_CREDENTIALS so sluice learns the
 * pid of a forked environment. Returns 0 or a negative error. */
static int out_send(struct out *o, int creds)
{
    size_t len = o->sb.size, done = 0, body = len - 4;
    unsigned char *p = (unsigned char *)o->sb.data;

    if (body > SLR_FRAME_MAX)
        return fail("frame of %zu bytes is past the %d-byte cap", body, SLR_FRAME_MAX);
    p[0] = (unsigned char)(body >> 24);
    p[1] = (unsigned char)(body >> 16);
    p[2] = (unsigned char)(body >> 8);
    p[3] = (unsigned char)body;
    while (done < len) {
        union {
            struct cmsghdr h;
            char b[CMSG_SPACE(sizeof(struct ucred))];
        } cm;
        struct iovec iov = {.iov_base = p + done, .iov_len = len - done};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        ssize_t w;

        if (creds && done == 0) {
            struct ucred uc = {.pid = getpid(), .uid = getuid(), .gid = getgid()};
            struct cmsghdr *c;

            memset(&cm, 0, sizeof cm);
            mh.msg_control = cm.b;
            mh.msg_controllen = sizeof cm.b;
            c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_CREDENTIALS;
            c->cmsg_len = CMSG_LEN(sizeof uc);
            memcpy(CMSG_DATA(c), &uc, sizeof uc);
        }
        w = sendmsg(rt.fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return fail("cannot write to sluice: %s", strerror(errno));
        }
        done += (size_t)w;
    }
    return 0;
}

static int send_simple(const char *type)
{
    struct out o;
    int rc;

    out_init(&o, 1, type);
    rc = out_send(&o, 0);
    out_destroy(&o);
    return rc;
}

static int send_ready(int restored)
{
    struct out o;
    int rc;

    out_init(&o, restored ? 3 : 2, "ready");
    out_str(&o, "runtime", SLR_RUNTIME);
    if (restored) {
        msgpack_pack_str_with_body(&o.pk, "restored", 8);
        msgpack_pack_true(&o.pk);
    }
    rc = out_send(&o, restored);
    out_destroy(&o);
    return rc;
}

/* The error set by slr_set_error(), or `def_type` and no message. */
static void out_error(struct out *o, const char *def_type)
{
    out_str(o, "error_type", rt.err_type[0] ? rt.err_type : def_type);
    out_str(o, "error_message", rt.err_msg ? rt.err_msg : "");
    msgpack_pack_str_with_body(&o->pk, "stack", 5);
    msgpack_pack_array(&o->pk, 0); /* C has no portable stack trace */
}

static int send_init_error(const char *def_type)
{
    struct out o;
    int rc;

    out_init(&o, 4, "init_error");
    out_error(&o, def_type);
    rc = out_send(&o, 0);
    out_destroy(&o);
    return rc;
}

_Noreturn void slr_init_error(const char *type, const char *fmt, ...)
{
    va_list ap;

    rt.fd = runtime_fd();
    va_start(ap, fmt);
    set_error_v(type, fmt, ap);
    va_end(ap);
    fprintf(stderr, "init error: %s: %s\n", rt.err_type[0] ? rt.err_type : "Runtime.InitError",
            rt.err_msg ? rt.err_msg : "");
    send_init_error("Runtime.InitError");
    exit(1);
}

/* ------------------------------------------------------------------ */
/* Messages                                                            */

static int on_invoke(const msgpack_object *m, slr_handler_fn fn, void *arg)
{
    const char *p, *ev;
    size_t n, evlen, outlen = 0;
    int64_t deadline = 0, mem = 0;
    char *rid, *fname, *fver, *arn, *cc = NULL, *event, *outp = NULL;
    struct slr_context ctx;
    struct out o;
    int rc, hrc;

    if (rt.snapshotted)
        return fail("sluice sent `invoke` to a snapshotted template");
    /* Copy everything out: the handler gets NUL-terminated strings, and the
     * frame's bytes have no room for the NULs. */
    if ((rc = get_bytes(m, "request_id", 1, 0, &p, &n)) < 0)
        return rc;
    rid = xstrndup(p, n);
    if ((rc = get_bytes(m, "event", 1, 1, &ev, &evlen)) < 0)
        goto fail_rid;
    if ((rc = get_int(m, "deadline_ms", &deadline)) < 0 ||
        (rc = get_int(m, "memory_mb", &mem)) < 0)
        goto fail_rid;
    if ((rc = get_bytes(m, "function_name", 0, 0, &p, &n)) < 0)
        goto fail_rid;
    fname = xstrndup(p ? p : "", n);
    if ((rc = get_bytes(m, "function_version", 0, 0, &p, &n)) < 0)
        goto fail_fname;
    fver = xstrndup(p ? p : "", n);
    if ((rc = get_bytes(m, "invoked_function_arn", 0, 0, &p, &n)) < 0)
        goto fail_fver;
    arn = xstrndup(p ? p : "", n);
    if ((rc = get_bytes(m, "client_context", 0, 1, &p, &n)) < 0)
        goto fail_arn;
    if (p)
        cc = xstrndup(p, n);
    event = xstrndup(ev, evlen);

    ctx = (struct slr_context){
        .request_id = rid,
        .function_name = fname,
        .function_version = fver,
        .invoked_function_arn = arn,
        .client_context = cc,
        .deadline_ms = deadline,
        .memory_mb = mem > 0 && mem < INT32_MAX ? (int)mem : 0,
    };
    clear_error();
    hrc = fn(event, evlen, &ctx, &outp, &outlen, arg);
    fflush(stdout); /* the handler's lines belong to this request id */
    fflush(stderr);
    if (hrc == 0 && outp && outlen == 0)
        outlen = strlen(outp);
    if (hrc == 0 && outlen > SLR_PAYLOAD_MAX) {
        /* Past the cap the frame itself would be illegal: say why here. */
        slr_set_error("Function.ResponseSizeTooLarge",
                      "Response payload size (%zu bytes) exceeded maximum allowed payload "
                      "size (%d bytes).",
                      outlen, SLR_PAYLOAD_MAX);
        hrc = -1;
    }

    if (hrc == 0) {
        out_init(&o, 4, "result");
        out_str(&o, "request_id", rid);
        msgpack_pack_str_with_body(&o.pk, "ok", 2);
        msgpack_pack_true(&o.pk);
        msgpack_pack_str_with_body(&o.pk, "payload", 7);
        if (outp) {
            msgpack_pack_bin_with_body(&o.pk, outp, outlen);
        } else {
            msgpack_pack_bin_with_body(&o.pk, "null", 4);
        }
    } else {
        out_init(&o, 6, "result");
        out_str(&o, "request_id", rid);
        msgpack_pack_str_with_body(&o.pk, "ok", 2);
        msgpack_pack_false(&o.pk);
        out_error(&o, "HandlerError");
    }
    free(outp);
    rc = out_send(&o, 0);
    out_destroy(&o);
    clear_error();
    free(event);
    free(cc);
fail_arn:
    free(arn);
fail_fver:
    free(fver);
fail_fname:
    free(fname);
fail_rid:
    free(rid);
    return rc;
}

static int on_snapshot(void)
{
    size_t i;

    clear_error();
    for (i = 0; i < rt.nbefore; i++) {
        if (rt.before[i].fn(rt.before[i].arg) != 0) {
            fprintf(stderr, "sluice_runtime: before-snapshot hook failed: %s: %s\n",
                    rt.err_type[0] ? rt.err_type : "Runtime.BeforeSnapshotError",
                    rt.err_msg ? rt.err_msg : "");
            send_init_error("Runtime.BeforeSnapshotError");
            return -ECANCELED;
        }
    }
    fflush(NULL);
    rt.snapshotted = 1;
    return send_simple("snapshot_ready");
}

/* Fresh seeds for the generators libc owns, so environments forked from
 * one template do not draw the same numbers. */
static void reseed(void)
{
    unsigned char b[sizeof(unsigned) + 3 * sizeof(unsigned short)];
    unsigned short s48[3];
    unsigned seed;

    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) {
        struct timespec ts;

        /* getrandom cannot fail once the pool is up; a weaker seed beats none. */
        clock_gettime(CLOCK_MONOTONIC, &ts);
        memset(b, 0, sizeof b);
        seed = (unsigned)ts.tv_nsec ^ (unsigned)ts.tv_sec ^ (unsigned)getpid() << 16;
        memcpy(b, &seed, sizeof seed);
        memcpy(b + sizeof seed, &seed, sizeof seed);
    }
    memcpy(&seed, b, sizeof seed);
    memcpy(s48, b + sizeof seed, sizeof s48);
    srandom(seed);
    seed48(s48);
}

/* Descriptors a `fork` frame carries, in this order. */
enum { FORK_SOCK, FORK_STDOUT, FORK_STDERR, FORK_NFDS };

static void close_fds(int *fds, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        close(fds[i]);
}

/* In the new environment: take over the received socket and output pipes
 * as fds 3, 1 and 2 (dropping the template's), then announce ourselves
 * with credentials. Takes ownership of fds[]. */
static int fork_child(int fds[FORK_NFDS])
{
    const int target[FORK_NFDS] = {rt.fd, STDOUT_FILENO, STDERR_FILENO};
    int tmp[FORK_NFDS];
    size_t i;

    if (rt.chld_ignored)
        sigaction(SIGCHLD, &rt.chld_old, NULL);
    rt.chld_ignored = 0;
    rt.snapshotted = 0;
    /* Park the received fds above every target first: one of them may sit
     * on a target number (the template had closed its stdout, say). */
    for (i = 0; i < FORK_NFDS; i++) {
        tmp[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 10);
        if (tmp[i] < 0)
            return fail("cannot take over the new environment's fds: %s", strerror(errno));
    }
    close_fds(fds, FORK_NFDS);
    /* dup3 closes what sat on each target: the template's socket and
     * output. Only the protocol socket stays close-on-exec. */
    for (i = 0; i < FORK_NFDS; i++) {
        if (dup3(tmp[i], target[i], i == FORK_SOCK ? O_CLOEXEC : 0) < 0)
            return fail("cannot move a descriptor to fd %d: %s", target[i], strerror(errno));
    }
    close_fds(tmp, FORK_NFDS);
    reseed();
    setenv("AWS_LAMBDA_INITIALIZATION_TYPE", "snap-start", 1);
    clear_error();
    for (i = 0; i < rt.nafter; i++) {
        if (rt.after[i].fn(rt.after[i].arg) != 0) {
            fprintf(stderr, "sluice_runtime: after-restore hook failed: %s: %s\n",
                    rt.err_type[0] ? rt.err_type : "Runtime.AfterRestoreError",
                    rt.err_msg ? rt.err_msg : "");
            send_init_error("Runtime.AfterRestoreError");
            return -ECANCELED;
        }
    }
    return send_ready(1);
}

static int on_fork(const msgpack_object *m)
{
    int fds[FORK_NFDS];
    const char *p;
    size_t n;
    char *env_id;
    struct out o;
    pid_t pid;
    int rc;

    if ((rc = get_bytes(m, "env_id", 1, 0, &p, &n)) < 0)
        return rc;
    if (rt.nfds != FORK_NFDS)
        return fail("`fork` from sluice came with %zu descriptors, not %d", rt.nfds, FORK_NFDS);
    memcpy(fds, rt.fds, sizeof fds);
    rt.nfds = 0;
    env_id = xstrndup(p, n);

    if (!rt.chld_ignored) {
        /* Forked environments are our children; let the kernel reap them
         * so dead ones never pile up as zombies in the template. */
        struct sigaction ign = {.sa_handler = SIG_IGN};

        sigemptyset(&ign.sa_mask);
        if (sigaction(SIGCHLD, &ign, &rt.chld_old) == 0)
            rt.chld_ignored = 1;
    }
    fflush(NULL); /* or buffered output would be written twice */
    pid = fork();
    if (pid < 0) {
        /* No message says "fork failed": dying tells sluice plainly, and
         * closes the new environment's socket as well. */
        rc = fail("cannot fork environment %s: %s", env_id, strerror(errno));
        close_fds(fds, FORK_NFDS);
        free(env_id);
        return rc;
    }
    if (pid == 0) {
        free(env_id);
        return fork_child(fds);
    }
    close_fds(fds, FORK_NFDS);
    out_init(&o, 3, "forked");
    out_str(&o, "env_id", env_id);
    msgpack_pack_str_with_body(&o.pk, "pid", 3);
    msgpack_pack_int64(&o.pk, pid);
    rc = out_send(&o, 0);
    out_destroy(&o);
    free(env_id);
    return rc;
}

/* Whether sluice's bytes can go to our stderr as they are. */
static int printable(const char *s, size_t n)
{
    size_t i;

    if (n > 64)
        return 0;
    for (i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return 0;
    return 1;
}

/* ------------------------------------------------------------------ */
/* The loop                                                            */

int slr_start(slr_handler_fn fn, void *arg)
{
    msgpack_unpacked up;
    struct stat st;
    int rc = 0, done = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    rt.fd = runtime_fd();
    if (fstat(rt.fd, &st) < 0 || !S_ISSOCK(st.st_mode)) {
        fail("fd %d is not sluice's socket; run this handler under sluice", rt.fd);
        return 1;
    }
    /* Processes the handler spawns must not hold the protocol socket. */
    fcntl(rt.fd, F_SETFD, FD_CLOEXEC);
    if (!fn) {
        slr_init_error("Runtime.InitError", "slr_start() was given no handler");
    }
    if (send_ready(0) < 0)
        return 1;

    msgpack_unpacked_init(&up);
    while (!done) {
        const char *type;
        size_t len, tlen;

        rc = read_frame(&up, &len);
        if (rc == RT_EOF) {
            rc = 0; /* sluice went away between frames: nothing left to do */
            break;
        }
        if (rc < 0)
            break;
        if ((rc = get_bytes(&up.data, "type", 1, 0, &type, &tlen)) < 0)
            break;
        if (rt.nfds && !(tlen == 4 && memcmp(type, "fork", 4) == 0)) {
            rc = fail("sluice attached descriptors to `%.*s`", printable(type, tlen) ? (int)tlen : 1,
                      printable(type, tlen) ? type : "?");
            break;
        }
        if (tlen == 6 && memcmp(type, "invoke", 6) == 0) {
            rc = on_invoke(&up.data, fn, arg);
        } else if (tlen == 8 && memcmp(type, "shutdown", 8) == 0) {
            done = 1;
        } else if (tlen == 8 && memcmp(type, "snapshot", 8) == 0) {
            rc = on_snapshot();
        } else if (tlen == 4 && memcmp(type, "fork", 4) == 0) {
            rc = on_fork(&up.data);
        } else {
            /* A newer sluice may say more; what we do not know we skip. */
            fprintf(stderr, "sluice_runtime: ignoring message `%.*s`\n",
                    printable(type, tlen) ? (int)tlen : 1, printable(type, tlen) ? type : "?");
        }
        if (rc < 0)
            break;
    }
    msgpack_unpacked_destroy(&up);
    free(rt.body);
    rt.body = NULL;
    rt.body_cap = 0;
    clear_error();
    fflush(NULL);
    return rc < 0 ? 1 : 0;
}
