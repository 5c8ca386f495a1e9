/* isobench-nsexec: a container's first process, from its start to execve of the workload.
 *
 * Why C: the start path is a headline metric (create+start to exit of `true` <= 5 ms, at most twice
 * the `unshare -fpmiu true` floor). A fork of the Python runtime costs ~0.75 ms in page-table copies
 * alone, and every Python step of the child (each mount through ctypes, each touched object a
 * copy-on-write fault) adds more. The runtime instead posix_spawn()s this small static program (vfork:
 * no page tables copied) into the new PID namespace, as runc's nsexec and crun do in C. It runs on the
 * host binary only up to execve: no container process exists before it execs, so nothing in the
 * container can reach its /proc/self/exe (CVE-2019-5736); it also makes itself non-dumpable meanwhile.
 *
 * The parent (runtime/lifecycle/process.py) computes everything: the plan arrives on fd 5 as
 * NUL-separated "key\0value\0..." records (see encode_plan there), then EOF. fds 0-2 are the
 * workload's stdio, fd 3 reads the parent's go-ahead bytes, fd 4 reports to the parent:
 *   "R <t_ns> <t_rootfs> <t_child> <t_joined> <t_lo>\n"   root built (CLOCK_MONOTONIC ns stamps: t_child when
 *                                           the plan was read; t_lo
 *                                           0 unless it brought its new network namespace's lo up)
 *   "E <message>\n"                         a set-up step failed (exit 125)
 * and is close-on-exec: its EOF tells the parent the workload was exec'd. Parent bytes on fd 3:
 * "C" (cgroup made: join it by writing "0" to each cgroup_join file), "G" (go: exec).
 * The steps and their order are those of the Python child this replaced (rootfs as in
 * runtime/rootfs/mounts.py, masks as in runtime/security/masks.py, security.enter).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define FD_GO 3
#define FD_READY 4
#define FD_PLAN 5
#define EXIT_SETUP_FAILED 125
#define EXIT_CANNOT_EXEC 126
#define EXIT_NOT_FOUND 127
#define MAXLIST 512
#define NOSUID_NODEV_NOEXEC (MS_NOSUID | MS_NODEV | MS_NOEXEC)

struct list { int n; char *v[MAXLIST]; };

static struct plan {
    char *hostname, *workdir, *overlay_opts, *merged, *init_binary, *rootfs_dir, *exec_fifo, *oom_score_adj;
    long long unshare_flags, uid, gid, last_cap, umask;
    unsigned long long keep_mask;
    int cgroupns, userns, loopback, pdeathsig, read_only, privileged, nnp, oci;
    struct list args, env, groups, cgjoin, mounts /* kind,src,dst,ro quadruples */, etc /* dst,host pairs */,
        masked, readonly, joinns, sysctl /* key,value pairs */, rlimits /* name,kind,soft,hard */,
        cgdirs /* hierarchy,host dir pairs of a "cgroup" mount */,
        ocimounts /* dest,fstype,source,flags,data,propagation */, devices /* path,mode,major,minor,uid,gid */;
    char *seccomp; size_t seccomp_len;
} P;

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void say(const char *text) {
    size_t len = strlen(text);
    while (len > 0) {
        ssize_t n = write(FD_READY, text, len);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        text += n;
        len -= (size_t)n;
    }
}

/* Report a set-up failure to the parent on one line and exit 125. */
static void die(const char *fmt, ...) {
    char msg[4000] = "E ";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + 2, sizeof msg - 3, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n') *p = ' ';
    strcat(msg, "\n");
    say(msg);
    _exit(EXIT_SETUP_FAILED);
}

/* ------------------------------------------------------------------ the plan */

static char *read_all(int fd, size_t *len) {
    size_t cap = 16384, n = 0;
    char *buf = malloc(cap);
    if (!buf) die("out of memory reading the plan");
    for (;;) {
        if (n == cap && !(buf = realloc(buf, cap *= 2))) die("out of memory reading the plan");
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die("reading the plan: %s", strerror(errno));
        if (r == 0) break;
        n += (size_t)r;
    }
    *len = n;
    return buf;
}

static void push(struct list *l, char *v) {
    if (l->n >= MAXLIST) die("plan: more than %d entries in one list", MAXLIST);
    l->v[l->n++] = v;
}

/* The next NUL-terminated field at *p (advanced past it). */
static char *field(char **p, char *end, const char *after) {
    char *s = *p, *z = memchr(s, 0, (size_t)(end - s));
    if (!z) die("plan: truncated after %s", after);
    *p = z + 1;
    return s;
}

static void parse_plan(void) {
    size_t len;
    char *buf = read_all(FD_PLAN, &len), *p = buf, *end = buf + len;
    close(FD_PLAN);
    P.umask = -1;
    while (p < end) {
        const char *key = field(&p, end, "the last record");
        if (!strcmp(key, "seccomp")) {  /* last record: length, then the raw program */
            P.seccomp_len = strtoull(field(&p, end, key), NULL, 10);
            if ((size_t)(end - p) != P.seccomp_len) die("plan: seccomp program length mismatch");
            P.seccomp = p;
            break;
        }
        char *v = field(&p, end, key);
        if (!strcmp(key, "hostname")) P.hostname = v;
        else if (!strcmp(key, "workdir")) P.workdir = v;
        else if (!strcmp(key, "overlay")) P.overlay_opts = v;
        else if (!strcmp(key, "merged")) P.merged = v;
        else if (!strcmp(key, "init")) P.init_binary = v;
        else if (!strcmp(key, "rootfs_dir")) P.rootfs_dir = v;
        else if (!strcmp(key, "exec_fifo")) P.exec_fifo = v;
        else if (!strcmp(key, "oom_score_adj")) P.oom_score_adj = v;
        else if (!strcmp(key, "umask")) P.umask = strtoll(v, NULL, 10);
        else if (!strcmp(key, "oci")) P.oci = atoi(v);
        else if (!strcmp(key, "joinns")) push(&P.joinns, v);
        else if (!strcmp(key, "sysctl")) { push(&P.sysctl, v); push(&P.sysctl, field(&p, end, key)); }
        else if (!strcmp(key, "rlimit") || !strcmp(key, "ocimount") || !strcmp(key, "device")) {
            struct list *l = key[0] == 'r' ? &P.rlimits : key[0] == 'o' ? &P.ocimounts : &P.devices;
            int n = key[0] == 'r' ? 4 : 6;
            push(l, v);
            for (int i = 1; i < n; i++) push(l, field(&p, end, key));
        }
        else if (!strcmp(key, "unshare")) P.unshare_flags = strtoll(v, NULL, 10);
        else if (!strcmp(key, "uid")) P.uid = strtoll(v, NULL, 10);
        else if (!strcmp(key, "gid")) P.gid = strtoll(v, NULL, 10);
        else if (!strcmp(key, "last_cap")) P.last_cap = strtoll(v, NULL, 10);
        else if (!strcmp(key, "keep_mask")) P.keep_mask = strtoull(v, NULL, 10);
        else if (!strcmp(key, "cgroupns")) P.cgroupns = atoi(v);
        else if (!strcmp(key, "userns")) P.userns = atoi(v);
        else if (!strcmp(key, "loopback")) P.loopback = atoi(v);
        else if (!strcmp(key, "pdeathsig")) P.pdeathsig = atoi(v);
        else if (!strcmp(key, "read_only")) P.read_only = atoi(v);
        else if (!strcmp(key, "privileged")) P.privileged = atoi(v);
        else if (!strcmp(key, "nnp")) P.nnp = atoi(v);
        else if (!strcmp(key, "arg")) push(&P.args, v);
        else if (!strcmp(key, "env")) push(&P.env, v);
        else if (!strcmp(key, "group")) push(&P.groups, v);
        else if (!strcmp(key, "cgjoin")) push(&P.cgjoin, v);
        else if (!strcmp(key, "masked")) push(&P.masked, v);
        else if (!strcmp(key, "readonly")) push(&P.readonly, v);
        else if (!strcmp(key, "etc")) { push(&P.etc, v); push(&P.etc, field(&p, end, key)); }
        else if (!strcmp(key, "cgdir")) { push(&P.cgdirs, v); push(&P.cgdirs, field(&p, end, key)); }
        else if (!strcmp(key, "mount")) { push(&P.mounts, v); push(&P.mounts, field(&p, end, key)); push(&P.mounts, field(&p, end, key));
                                          push(&P.mounts, field(&p, end, key)); }
        else die("plan: unknown key %s", key);
    }
    if (!P.args.n || !P.workdir || !P.hostname) die("plan: no argv, workdir or hostname");
    push(&P.args, NULL);
    push(&P.env, NULL);
}

/* ------------------------------------------------------------------ paths */

static void do_mount(const char *src, const char *target, const char *fstype, unsigned long flags,
                     const char *data) {
    if (mount(src, target, fstype, flags, data) < 0)
        die("mount '%s' on '%s' (%s): %s", src ? src : "None", target, fstype ? fstype : "None", strerror(errno));
}

/* root/path with every symlink resolved as if root were "/" (never escapes root); as
 * runtime.rootfs.mounts.secure_join. */
static void secure_join(const char *root, const char *path, char *out, size_t outsz) {
    char cur[PATH_MAX] = "", rest[PATH_MAX * 2], full[PATH_MAX * 2], target[PATH_MAX];
    int links = 0;
    snprintf(rest, sizeof rest, "%s", path);
    for (;;) {
        char *r = rest;
        while (*r == '/') r++;
        if (!*r) break;
        char *slash = strchr(r, '/');
        size_t plen = slash ? (size_t)(slash - r) : strlen(r);
        char part[PATH_MAX];
        if (plen >= sizeof part) die("path %s: component too long", path);
        memcpy(part, r, plen);
        part[plen] = 0;
        memmove(rest, r + plen, strlen(r + plen) + 1);
        if (!strcmp(part, ".")) continue;
        if (!strcmp(part, "..")) {
            char *last = strrchr(cur, '/');
            if (last) *last = 0; else cur[0] = 0;
            continue;
        }
        char nxt[PATH_MAX];
        if (snprintf(nxt, sizeof nxt, "%s%s%s", cur, cur[0] ? "/" : "", part) >= (int)sizeof nxt)
            die("path %s too long", path);
        snprintf(full, sizeof full, "%s/%s", root, nxt);
        struct stat st;
        if (lstat(full, &st) < 0 || !S_ISLNK(st.st_mode)) {
            memcpy(cur, nxt, sizeof cur);
            continue;
        }
        if (++links > 40) die("too many symlinks resolving '%s' in the container", path);
        ssize_t n = readlink(full, target, sizeof target - 1);
        if (n < 0) die("readlink %s: %s", full, strerror(errno));
        target[n] = 0;
        if (target[0] == '/') cur[0] = 0;
        char joined[PATH_MAX * 2];
        if (snprintf(joined, sizeof joined, "%s/%s", target, rest) >= (int)sizeof joined)
            die("path %s too long after symlinks", path);
        memcpy(rest, joined, sizeof rest);
    }
    if (snprintf(out, outsz, "%s%s%s", root, cur[0] ? "/" : "", cur) >= (int)outsz) die("path %s too long", path);
}

static void mkdir_p(const char *path, mode_t mode) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0777) < 0 && errno != EEXIST) die("mkdir %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, mode) < 0 && errno != EEXIST) die("mkdir %s: %s", buf, strerror(errno));
}

/* Create path (a dir or an empty file) with its parents unless something is there already. */
static void ensure(const char *path, int is_dir) {
    struct stat st;
    if (lstat(path, &st) == 0) return;
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", path);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = 0;
        mkdir_p(parent, 0777);
    }
    if (is_dir) {
        if (mkdir(path, 0755) < 0) die("mkdir %s: %s", path, strerror(errno));
    } else {
        int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) die("create %s: %s", path, strerror(errno));
        close(fd);
    }
}

static void bind_mount(const char *src, const char *target, int read_only, int recursive) {
    do_mount(src, target, NULL, MS_BIND | (recursive ? MS_REC : 0), NULL);
    if (read_only) do_mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL);
}

/* ------------------------------------------------------------------ the root */

static const struct { const char *name; int major, minor; } DEVICES[] = {
    {"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
};
static const char *DEV_LINKS[][2] = {
    {"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
    {"stderr", "/proc/self/fd/2"}, {"ptmx", "pts/ptmx"},
};

static void mount_dev(const char *root) {
    char dev[PATH_MAX], p[PATH_MAX];
    snprintf(dev, sizeof dev, "%s/dev", root);
    ensure(dev, 1);
    do_mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=65536k");
    mode_t old = umask(0);  /* nodes get exactly 0666 */
    for (size_t i = 0; i < sizeof DEVICES / sizeof DEVICES[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dev, DEVICES[i].name);
        if (mknod(p, S_IFCHR | 0666, makedev(DEVICES[i].major, DEVICES[i].minor)) < 0)
            die("mknod %s: %s", p, strerror(errno));
    }
    umask(old);
    for (size_t i = 0; i < sizeof DEV_LINKS / sizeof DEV_LINKS[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dev, DEV_LINKS[i][0]);
        if (symlink(DEV_LINKS[i][1], p) < 0) die("symlink %s: %s", p, strerror(errno));
    }
    snprintf(p, sizeof p, "%s/pts", dev);
    if (mkdir(p, 0777) < 0) die("mkdir %s: %s", p, strerror(errno));
    do_mount("devpts", p, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620");
    snprintf(p, sizeof p, "%s/shm", dev);
    if (mkdir(p, 01777) < 0) die("mkdir %s: %s", p, strerror(errno));
    do_mount("shm", p, "tmpfs", NOSUID_NODEV_NOEXEC, "mode=1777,size=65536k");
    snprintf(p, sizeof p, "%s/mqueue", dev);
    if (mkdir(p, 0777) < 0) die("mkdir %s: %s", p, strerror(errno));
    do_mount("mqueue", p, "mqueue", NOSUID_NODEV_NOEXEC, NULL);
    /* /dev/console: no terminal to give; /dev/null keeps programs that open it working */
    snprintf(p, sizeof p, "%s/console", dev);
    int fd = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) die("create %s: %s", p, strerror(errno));
    close(fd);
    char null[PATH_MAX];
    snprintf(null, sizeof null, "%s/null", dev);
    do_mount(null, p, NULL, MS_BIND, NULL);
}

static void mount_sys(const char *root) {
    char target[PATH_MAX];
    snprintf(target, sizeof target, "%s/sys", root);
    ensure(target, 1);
    /* a fresh sysfs shows this network namespace's interfaces; the host's network namespace
     * (--network host) gets a read-only bind of the host's instead, which the kernel allows */
    if (mount("sysfs", target, "sysfs", NOSUID_NODEV_NOEXEC | MS_RDONLY, NULL) < 0) bind_mount("/sys", target, 1, 1);
}

static void pivot(const char *root) {
    if (chdir(root) < 0) die("chdir %s: %s", root, strerror(errno));
    if (syscall(SYS_pivot_root, ".", ".") < 0) die("pivot_root '%s': %s", root, strerror(errno));
    if (umount2(".", MNT_DETACH) < 0) die("umount '.': %s", strerror(errno));  /* the host's tree is gone */
    if (chdir("/") < 0) die("chdir /: %s", strerror(errno));
    if (P.read_only) do_mount(NULL, "/", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL);
}

/* A bundle's linux.devices (runtime/rootfs/ocimounts.py make_devices). */
static void make_devices(const char *root) {
    char path[PATH_MAX];
    for (int i = 0; i + 5 < P.devices.n; i += 6) {
        secure_join(root, P.devices.v[i], path, sizeof path);
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "%s", path);
        char *slash = strrchr(parent, '/');
        if (slash && slash != parent) { *slash = 0; mkdir_p(parent, 0777); }
        struct stat st;
        if (lstat(path, &st) == 0 && unlink(path) < 0) die("unlink %s: %s", path, strerror(errno));
        mode_t old = umask(0);
        int r = mknod(path, (mode_t)strtoul(P.devices.v[i + 1], NULL, 10),
                      makedev(strtoul(P.devices.v[i + 2], NULL, 10), strtoul(P.devices.v[i + 3], NULL, 10)));
        umask(old);
        if (r < 0) die("mknod %s: %s", P.devices.v[i], strerror(errno));
        if (chown(path, (uid_t)strtoul(P.devices.v[i + 4], NULL, 10), (gid_t)strtoul(P.devices.v[i + 5], NULL, 10)) < 0)
            die("chown %s: %s", P.devices.v[i], strerror(errno));
    }
}

/* runc's default nodes and links in a tmpfs /dev, and /dev/console: /dev/null (ocimounts.populate_dev). */
static void populate_dev(const char *dev) {
    char p[PATH_MAX + 64];
    struct stat st;
    mode_t old = umask(0);
    for (size_t i = 0; i < sizeof DEVICES / sizeof DEVICES[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dev, DEVICES[i].name);
        if (lstat(p, &st) < 0 && mknod(p, S_IFCHR | 0666, makedev(DEVICES[i].major, DEVICES[i].minor)) < 0)
            die("mknod %s: %s", p, strerror(errno));
    }
    umask(old);
    for (size_t i = 0; i < sizeof DEV_LINKS / sizeof DEV_LINKS[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dev, DEV_LINKS[i][0]);
        if (lstat(p, &st) < 0 && symlink(DEV_LINKS[i][1], p) < 0) die("symlink %s: %s", p, strerror(errno));
    }
    snprintf(p, sizeof p, "%s/console", dev);
    ensure(p, 0);
    char null[PATH_MAX + 64];
    snprintf(null, sizeof null, "%s/null", dev);
    do_mount(null, p, NULL, MS_BIND, NULL);
}

#define BIND_KEEP (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME | MS_RELATIME)

/* A bundle's "cgroup" mount, as runtime.rootfs.ocimounts._mount_cgroup (what runc gives on each
 * layout): cgroup2 where the container has its own cgroup namespace on v2, else a tmpfs holding a
 * bind of the container's own cgroup directory of each v1 hierarchy, read-only as the mount asks. */
static void mount_cgroup(const char *target, unsigned long flags) {
    unsigned long ro = flags & MS_RDONLY;
    ensure(target, 1);
    if (P.cgdirs.n == 2 && !strcmp(P.cgdirs.v[0], "unified")) {
        do_mount("cgroup2", target, "cgroup2", NOSUID_NODEV_NOEXEC | ro, NULL);
        return;
    }
    do_mount("tmpfs", target, "tmpfs", NOSUID_NODEV_NOEXEC, "mode=755");
    for (int i = 0; i + 1 < P.cgdirs.n; i += 2) {
        char sub[PATH_MAX + 64];
        snprintf(sub, sizeof sub, "%s/%s", target, P.cgdirs.v[i]);
        if (mkdir(sub, 0755) < 0) die("mkdir %s: %s", sub, strerror(errno));
        do_mount(P.cgdirs.v[i + 1], sub, NULL, MS_BIND, NULL);
        do_mount(NULL, sub, NULL, MS_BIND | MS_REMOUNT | NOSUID_NODEV_NOEXEC | ro, NULL);
    }
    if (ro) do_mount(NULL, target, NULL, MS_REMOUNT | NOSUID_NODEV_NOEXEC | MS_RDONLY, "mode=755");
}

/* A bundle's mounts, already parsed into flags and data by the parent (ocimounts.plan), as
 * ocimounts.apply: binds take a remount for their flags; a refused sysfs (the host's network
 * namespace) becomes a read-only bind of the host's; a cgroup mount as mount_cgroup. */
static void apply_oci_mounts(const char *root) {
    char target[PATH_MAX];
    int dev_tmpfs = 0;
    for (int i = 0; i + 5 < P.ocimounts.n; i += 6) {
        const char *dest = P.ocimounts.v[i], *fstype = P.ocimounts.v[i + 1], *src = P.ocimounts.v[i + 2],
                   *data = P.ocimounts.v[i + 4];
        unsigned long flags = strtoul(P.ocimounts.v[i + 3], NULL, 10), prop = strtoul(P.ocimounts.v[i + 5], NULL, 10);
        secure_join(root, dest, target, sizeof target);
        if (!strcmp(fstype, "cgroup")) {
            mount_cgroup(target, flags);
            continue;
        }
        if (flags & MS_BIND) {
            struct stat st;
            if (stat(src, &st) < 0) die("bind mount source '%s' for %s: %s", src, dest, strerror(errno));
            ensure(target, S_ISDIR(st.st_mode));
            do_mount(src, target, NULL, flags & (MS_BIND | MS_REC), NULL);
            if (flags & BIND_KEEP) do_mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | (flags & BIND_KEEP), NULL);
        } else {
            ensure(target, 1);
            if (mount(src[0] ? src : fstype, target, fstype, flags, data[0] ? data : NULL) < 0) {
                if (strcmp(fstype, "sysfs") || errno != EPERM) die("mount %s on %s: %s", fstype, dest, strerror(errno));
                bind_mount("/sys", target, 1, 1);
            }
        }
        if (prop) do_mount(NULL, target, NULL, prop, NULL);
        size_t dl = strlen(dest);
        while (dl > 1 && dest[dl - 1] == '/') dl--;
        if (dl == 4 && !strncmp(dest, "/dev", 4) && !strcmp(fstype, "tmpfs")) dev_tmpfs = 1;
    }
    make_devices(root);
    if (dev_tmpfs) {
        char dev[PATH_MAX + 8];
        snprintf(dev, sizeof dev, "%s/dev", root);
        populate_dev(dev);
    }
}

static void setup_rootfs(void) {
    const char *root = P.merged;
    char target[PATH_MAX];
    do_mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL);  /* nothing propagates back to the host */
    if (P.overlay_opts)
        do_mount("overlay", root, "overlay", 0, P.overlay_opts);
    else  /* a bundle's plain root.path */
        do_mount(P.rootfs_dir ? P.rootfs_dir : "", root, NULL, MS_BIND | MS_REC, NULL);
    if (P.oci) {
        apply_oci_mounts(root);
        pivot(root);
        return;
    }
    for (int i = 0; i + 3 < P.mounts.n; i += 4) {
        const char *kind = P.mounts.v[i], *src = P.mounts.v[i + 1], *dst = P.mounts.v[i + 2];
        int ro = P.mounts.v[i + 3][0] == '1';
        secure_join(root, dst, target, sizeof target);
        if (!strcmp(kind, "tmpfs")) {
            ensure(target, 1);
            do_mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV | (ro ? MS_RDONLY : 0), "mode=1777");
        } else {
            struct stat st;
            ensure(target, stat(src, &st) == 0 && S_ISDIR(st.st_mode));
            bind_mount(src, target, ro, 1);
        }
    }
    secure_join(root, "/proc", target, sizeof target);
    ensure(target, 1);
    do_mount("proc", target, "proc", NOSUID_NODEV_NOEXEC, NULL);
    mount_dev(root);
    if (P.init_binary && P.init_binary[0]) {
        snprintf(target, sizeof target, "%s/dev/init", root);
        ensure(target, 0);
        bind_mount(P.init_binary, target, 1, 0);
    }
    mount_sys(root);
    for (int i = 0; i + 1 < P.etc.n; i += 2) {
        struct stat st;
        secure_join(root, P.etc.v[i], target, sizeof target);
        if (lstat(target, &st) == 0 && S_ISLNK(st.st_mode)) continue;  /* dangling link: the image's choice */
        ensure(target, 0);
        do_mount(P.etc.v[i + 1], target, NULL, MS_BIND, NULL);
    }
    pivot(root);
}

/* Masked and read-only /proc and /sys paths (runtime/security/masks.py): absent ones are skipped. */
static void apply_masks(void) {
    for (int i = 0; i < P.readonly.n; i++) {
        const char *p = P.readonly.v[i];
        if (mount(p, p, NULL, MS_BIND | MS_REC, NULL) < 0) {
            if (errno == ENOENT) continue;
            die("masking /proc and /sys paths failed: mount '%s' on '%s' (None): %s", p, p, strerror(errno));
        }
        if (mount(p, p, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | NOSUID_NODEV_NOEXEC, NULL) < 0)
            die("masking /proc and /sys paths failed: remount '%s' read-only: %s", p, strerror(errno));
    }
    for (int i = 0; i < P.masked.n; i++) {
        const char *p = P.masked.v[i];
        struct stat st;
        if (stat(p, &st) < 0) continue;
        int r = S_ISDIR(st.st_mode) ? mount("tmpfs", p, "tmpfs", MS_RDONLY | NOSUID_NODEV_NOEXEC, "size=0,mode=0555")
                                    : mount("/dev/null", p, NULL, MS_BIND, NULL);
        if (r < 0) die("masking /proc and /sys paths failed: mask '%s': %s", p, strerror(errno));
    }
}

/* ------------------------------------------------------------------ sync with the parent */

static char got[64];
static size_t ngot;

/* Read the parent's bytes until `want` arrived (it may come with others). */
static void await(char want, const char *gone) {
    while (!memchr(got, want, ngot)) {
        if (ngot == sizeof got) ngot = 0;
        ssize_t n = read(FD_GO, got + ngot, sizeof got - ngot);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) die("%s", gone);
        ngot += (size_t)n;
    }
}

/* Join a cgroup by writing "0" into each of its cgroup_join files; a failure ends the helper when
 * ``fatal``, else it is returned (0). */
static int join_files(char **files, int n, int fatal) {
    for (int i = 0; i < n; i++) {
        int fd = open(files[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) != 1) {
            if (!fatal) {
                if (fd >= 0) close(fd);
                return 0;
            }
            char dir[PATH_MAX];
            snprintf(dir, sizeof dir, "%s", files[i]);
            char *slash = strrchr(dir, '/');
            if (slash) *slash = 0;
            die("cannot join cgroup %s: %s", dir, strerror(errno));
        }
        close(fd);
    }
    return 1;
}

static long long join_cgroup(void) {
    await('C', "the runtime went away before the container's cgroup was ready");
    join_files(P.cgjoin.v, P.cgjoin.n, 1);
    return now_ns();
}

/* --network none: lo up in the network namespace just made, by the ioctls of runtime's set_link_up
 * (microseconds here; in the parent it cost a setns'd socket and a round trip through Python while
 * this process waited for its go-ahead). */
static long long loopback_up(void) {
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0) die("loopback: %s", strerror(errno));
    if (!(ifr.ifr_flags & IFF_UP)) {
        ifr.ifr_flags |= IFF_UP;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) die("loopback: cannot bring lo up: %s", strerror(errno));
    }
    close(s);
    return now_ns();
}

/* ------------------------------------------------------------------ process settings (runtime-spec) */

static void write_text(const char *path, const char *text, const char *what) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) die("%s: %s (%s)", what, strerror(errno), path);
    close(fd);
}

/* linux.sysctl, after /proc is mounted and before the masks make /proc/sys read-only. */
static void apply_sysctl(void) {
    for (int i = 0; i + 1 < P.sysctl.n; i += 2) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "/proc/sys/%s", P.sysctl.v[i]);
        for (char *c = path + 10; *c; c++)
            if (*c == '.') *c = '/';
        write_text(path, P.sysctl.v[i + 1], "linux.sysctl");
    }
}

/* process.rlimits, oomScoreAdj and user.umask, before R: a refused rlimit fails `create`. */
static void process_settings(void) {
    for (int i = 0; i + 3 < P.rlimits.n; i += 4) {
        struct rlimit r = {strtoull(P.rlimits.v[i + 2], NULL, 10), strtoull(P.rlimits.v[i + 3], NULL, 10)};
        if (P.rlimits.v[i + 2][0] == '-') r.rlim_cur = RLIM_INFINITY;
        if (P.rlimits.v[i + 3][0] == '-') r.rlim_max = RLIM_INFINITY;
        if (setrlimit(atoi(P.rlimits.v[i + 1]), &r) < 0)
            die("process.rlimits: cannot set %s to %s/%s: %s", P.rlimits.v[i], P.rlimits.v[i + 2], P.rlimits.v[i + 3],
                strerror(errno));
    }
    if (P.oom_score_adj) write_text("/proc/self/oom_score_adj", P.oom_score_adj, "process.oomScoreAdj");
    if (P.umask >= 0) umask((mode_t)P.umask);
}

/* ------------------------------------------------------------------ security (runtime/security) */

static void load_seccomp(const char *step) {
    struct sock_fprog prog = {.len = (unsigned short)(P.seccomp_len / 8), .filter = (struct sock_filter *)P.seccomp};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
        die("container init: %s failed: prctl(PR_SET_SECCOMP): %s", step, strerror(errno));
}

static void set_ids(void) {
    gid_t groups[MAXLIST];
    for (int i = 0; i < P.groups.n; i++) groups[i] = (gid_t)strtoul(P.groups.v[i], NULL, 10);
    if (syscall(SYS_setgroups, P.groups.n, groups) < 0 || syscall(SYS_setgid, (gid_t)P.gid) < 0 ||
        syscall(SYS_setuid, (uid_t)P.uid) < 0)
        die("container init: setgroups/setgid/setuid %lld:%lld failed: %s", P.uid, P.gid, strerror(errno));
}

static void enter_security(void) {
    if (P.privileged) {
        set_ids();
        if (P.nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            die("container init: no_new_privs failed: %s", strerror(errno));
        return;
    }
    for (long long cap = 0; cap <= P.last_cap; cap++)
        if (!(P.keep_mask & (1ULL << cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
            die("container init: capability bounding set failed: prctl(PR_CAPBSET_DROP %lld): %s", cap, strerror(errno));
    if (P.seccomp && !P.nnp) load_seccomp("seccomp (before setuid)");
    set_ids();
    unsigned long long keep = P.uid == 0 ? P.keep_mask : 0;
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2] = {
        {(uint32_t)keep, (uint32_t)keep, 0}, {(uint32_t)(keep >> 32), (uint32_t)(keep >> 32), 0}};
    if (syscall(SYS_capset, &hdr, data) < 0) die("container init: capset failed: %s", strerror(errno));
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        die("container init: capset failed: PR_CAP_AMBIENT_CLEAR_ALL: %s", strerror(errno));
    if (P.nnp) {
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) die("container init: no_new_privs failed: %s", strerror(errno));
        if (P.seccomp) load_seccomp("seccomp");
    }
}

/* ------------------------------------------------------------------ exec */

/* execvpe with the *container's* PATH (glibc's uses the caller's), errors as Python's os.execvpe. */
static void exec_workload(void) {
    char *file = P.args.v[0];
    int err, saved = 0;
    if (strchr(file, '/')) {
        execve(file, P.args.v, P.env.v);
        err = errno;
    } else {
        const char *path = "/bin:/usr/bin";
        for (int i = 0; P.env.v[i]; i++)
            if (!strncmp(P.env.v[i], "PATH=", 5)) path = P.env.v[i] + 5;
        err = ENOENT;
        for (const char *d = path;; ) {
            const char *colon = strchrnul(d, ':');
            char full[PATH_MAX];
            int dl = (int)(colon - d);
            if (dl == 0) snprintf(full, sizeof full, "%s", file);
            else snprintf(full, sizeof full, "%.*s%s%s", dl, d, d[dl - 1] == '/' ? "" : "/", file);
            execve(full, P.args.v, P.env.v);
            err = errno;
            if (err != ENOENT && err != ENOTDIR && !saved) saved = err;
            if (!*colon) break;
            d = colon + 1;
        }
        if (saved) err = saved;
    }
    char msg[PATH_MAX + 100];
    int code = EXIT_CANNOT_EXEC;
    if (err == ENOENT) {  /* a path is not looked up in $PATH: say what is missing, as runc does */
        snprintf(msg, sizeof msg, "isobench: exec: \"%s\": %s\n", file,
                 strchr(file, '/') ? "no such file or directory" : "executable file not found in $PATH");
        code = EXIT_NOT_FOUND;
    } else if (err == EACCES || err == EPERM) {
        snprintf(msg, sizeof msg, "isobench: exec: \"%s\": permission denied\n", file);
    } else {
        snprintf(msg, sizeof msg, "isobench: exec: \"%s\": %s\n", file, strerror(err));
    }
    if (write(2, msg, strlen(msg)) < 0) { /* nothing left to tell */ }
    _exit(code);
}

/* Default dispositions and an empty blocked mask, as runc gives a container's process (the Python
 * child's process.reset_signals): ignored signals and the mask survive execve, so a monitor that
 * ignores SIGINT/SIGHUP, Python's SIGPIPE/SIGXFSZ or a caller under nohup would hand them on. */
static void reset_signals(void) {
    /* raw rt_sigaction: glibc refuses its two reserved real-time signals (32, 33), which its
     * posix_spawn leaves ignored in the new process, and those would reach the workload too */
    struct { void *handler; unsigned long flags; void *restorer; unsigned long mask; } dfl = {0};
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            syscall(SYS_rt_sigaction, sig, &dfl, NULL, sizeof dfl.mask);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

int main(int argc, char **argv) {
    long long t_child, t_joined = 0, t_lo = 0;
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);  /* nobody opens our /proc/<pid>/exe (the host binary) */
    /* A helper spawned ahead (runtime.lifecycle.spares) joins its future container's cgroup (argv[1..]:
     * its cgroup_join files) before it waits for its plan, which then lists none. A failed join is not
     * fatal yet (the spare would be lost): it is retried once the plan is in, and reported then. */
    int prejoined = join_files(argv + 1, argc - 1, 0);
    parse_plan();  /* a helper spawned ahead waits here for its container */
    t_child = now_ns();  /* the plan is in: this container's work starts */
    if (!prejoined) join_files(argv + 1, argc - 1, 1);
    if (P.pdeathsig) prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    reset_signals();
    for (int i = 0; i < P.joinns.n; i++) {  /* namespaces the spec names by path (podman's network) */
        int fd = open(P.joinns.v[i], O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, 0) < 0) die("setns %s: %s", P.joinns.v[i], strerror(errno));
        close(fd);
    }
    int fifo = -1;  /* created, not started: the exec waits until `start` reads this fifo */
    if (P.exec_fifo && (fifo = open(P.exec_fifo, O_PATH | O_CLOEXEC)) < 0)
        die("open %s: %s", P.exec_fifo, strerror(errno));
    if (P.cgroupns) t_joined = join_cgroup();  /* the namespace's root is the cgroup we are in at unshare */
    if (unshare((int)P.unshare_flags) < 0) die("unshare(0x%llx): %s", P.unshare_flags, strerror(errno));
    if (P.loopback) t_lo = loopback_up();
    if (!P.cgroupns) t_joined = join_cgroup();
    long long t_ns = now_ns();
    setup_rootfs();
    apply_sysctl();
    apply_masks();
    if (P.hostname[0] && sethostname(P.hostname, strlen(P.hostname)) < 0)  /* "": the host's UTS namespace */
        die("sethostname %s: %s", P.hostname, strerror(errno));
    process_settings();
    long long t_rootfs = now_ns();
    /* last: mounts above were made by real root, owned by the host's user namespace */
    if (P.userns && unshare(CLONE_NEWUSER) < 0) die("unshare(CLONE_NEWUSER): %s", strerror(errno));
    char line[128];
    snprintf(line, sizeof line, "R %lld %lld %lld %lld %lld\n", t_ns, t_rootfs, t_child, t_joined, t_lo);
    say(line);
    await('G', "the runtime went away before the container started");
    close(FD_GO);
    mkdir_p(P.workdir, 0777);
    if (chdir(P.workdir) < 0) die("chdir %s: %s", P.workdir, strerror(errno));
    if (fifo >= 0) {  /* blocks until `start` opens the fifo for reading */
        char path[64];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fifo);
        int w = open(path, O_WRONLY | O_CLOEXEC);
        if (w < 0 || write(w, "0", 1) != 1) die("exec fifo %s: %s", P.exec_fifo, strerror(errno));
        close(w);
        close(fifo);
    }
    /* only 0-2 (and the report fd, until exec) reach the workload */
    if (syscall(SYS_close_range, 3, ~0U, 4 /* CLOSE_RANGE_CLOEXEC */) < 0) die("close_range: %s", strerror(errno));
    enter_security();
    exec_workload();
    return EXIT_CANNOT_EXEC;
}
