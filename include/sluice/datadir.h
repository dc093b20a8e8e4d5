/* sluice: server.data_dir, the directory of durable state (async.db and
 * its WAL files, async-consumer, the sandbox's state).
 *
 * Another local user must not be able to read or plant what is in it: a
 * data_dir writable by other users or owned by someone else is refused, a
 * symbolic link in its place too; what sluice creates there is 0700
 * (directories) or 0600 (files), opened with O_NOFOLLOW. */
#ifndef SLUICE_DATADIR_H
#define SLUICE_DATADIR_H

#include <stddef.h>

/* Is `dir` fit to be data_dir? 0 when it is, or does not exist yet (it
 * will be made 0700); -1 with why (size n) when it is a symbolic link, not
 * a directory, owned by another user or writable by group or others. For
 * `sluice lint`. */
int sl_data_dir_check(const char *dir, char *why, size_t n);

/* Make `dir` (the missing parts 0700) and check it as sl_data_dir_check
 * does; 0 or -1 with why. */
int sl_data_dir_prepare(const char *dir, char *why, size_t n);

/* Open `name` (one path component) in data_dir `dir` with `flags`
 * (O_CREAT makes it 0600), neither through a symbolic link; refuses what is
 * not a regular file of ours, and takes group and other permissions off
 * one made by an older sluice. The descriptor (O_CLOEXEC), or -1 with
 * errno set and why (size n). */
int sl_data_file_open(const char *dir, const char *name, int flags, char *why, size_t n);

#endif
