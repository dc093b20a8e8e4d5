/* server.data_dir: checked, made private, files opened without following
 * links (see sluice/datadir.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/datadir.h"
#include "sluice/mem.h"

/* Check an open directory: ours, and writable by nobody else. */
static int check_fd(int fd, const char *dir, char *why, size_t n)
{
    struct stat st;

    if (fstat(fd, &st) != 0) {
        snprintf(why, n, "data_dir %s: %s", dir, strerror(errno));
        return -1;
    }
    if (st.st_uid != geteuid()) {
        snprintf(why, n, "data_dir %s is owned by uid %u, not by this user (uid %u): use a "
                 "directory of your own", dir, (unsigned)st.st_uid, (unsigned)geteuid());
        return -1;
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        snprintf(why, n, "data_dir %s is writable by other users (mode %04o): chmod 700 it or use "
                 "a private directory", dir, (unsigned)(st.st_mode & 07777));
        return -1;
    }
    return 0;
}

static int open_dir(const char *dir, char *why, size_t n)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

    if (fd < 0) {
        int e = errno;
        struct stat st;

        if (e == ELOOP || (e == ENOTDIR && lstat(dir, &st) == 0 && S_ISLNK(st.st_mode)))
            snprintf(why, n, "data_dir %s is a symbolic link: give the directory itself", dir);
        else
            snprintf(why, n, "data_dir %s: %s", dir, strerror(e));
        errno = e;
    }
    return fd;
}

int sl_data_dir_check(const char *dir, char *why, size_t n)
{
    struct stat st;
    int fd, rc;

    if (lstat(dir, &st) != 0 && errno == ENOENT)
        return 0;
    if ((fd = open_dir(dir, why, n)) < 0)
        return -1;
    rc = check_fd(fd, dir, why, n);
    close(fd);
    return rc;
}

int sl_data_dir_prepare(const char *dir, char *why, size_t n)
{
    char *p = sl_strdup(dir);
    int fd, rc;

    /* every missing part, parents included, is ours alone */
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, 0700) != 0 && errno != EEXIST) {
                snprintf(why, n, "cannot create data_dir %s: %s: %s", dir, p, strerror(errno));
                free(p);
                return -1;
            }
            *s = '/';
        }
    free(p);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(why, n, "cannot create data_dir %s: %s", dir, strerror(errno));
        return -1;
    }
    if ((fd = open_dir(dir, why, n)) < 0)
        return -1;
    rc = check_fd(fd, dir, why, n);
    close(fd);
    return rc;
}

int sl_data_file_open(const char *dir, const char *name, int flags, char *why, size_t n)
{
    int dfd = open_dir(dir, why, n), fd, e;
    struct stat st;

    if (dfd < 0)
        return -1;
    fd = openat(dfd, name, flags | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
    e = errno;
    close(dfd);
    if (fd < 0) {
        snprintf(why, n, "cannot open %s/%s: %s", dir, name,
                 e == ELOOP ? "it is a symbolic link" : strerror(e));
        errno = e;
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
        snprintf(why, n, "cannot use %s/%s: not a regular file of this user's", dir, name);
        close(fd);
        errno = EPERM;
        return -1;
    }
    if ((st.st_mode & 077) && fchmod(fd, st.st_mode & 0700) != 0) {
        e = errno;
        snprintf(why, n, "cannot make %s/%s private: %s", dir, name, strerror(e));
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}
