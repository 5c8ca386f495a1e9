/* isobench: the `isobench` command, a small client of the resident isobench server. Built a second
 * time with -DOCI_RUNTIME as `isobench-runtime`, the OCI runtime CLI podman and conmon drive (see
 * "isobench-runtime" below).
 *
 * Why C: a Python interpreter needs 12-17 ms to start and the CLI's imports ~60 ms more, so a Python
 * `isobench run --rm busybox true` cannot match `runc run` (~26 ms). The server
 * (app/server/daemon.py, which documents the protocol) has paid both once and forks a worker per
 * command; this client hands it argv, the working directory, the environment, the umask and its fds
 * 0, 1, 2 (SCM_RIGHTS), forwards its signals to the worker and exits with the worker's exit code.
 *
 * No server (no socket, nobody listening, not allowed to connect), or a server that closed the
 * connection before reading the request: the client execs the Python entry point `isobench-py` next
 * to this binary with the same argv, so the command works the same, only slower. `isobench server ...`
 * always runs in Python: the server does not manage itself.
 *
 * Start on first use (as Bazel's and Gradle's clients do): when nobody listens on the socket, the
 * client also starts a server there in the background (`isobench-py server start --idle-timeout S`,
 * detached, its output to /dev/null) before it runs this one command in Python, so the next commands
 * are served; the server exits after S idle seconds (ISOBENCH_SERVER_IDLE_S, default 900).
 * ISOBENCH_SERVER_AUTOSTART=0 turns this off (a server started by hand is still used).
 *
 * Built by scripts/setup.sh with `gcc -O2` and installed as .venv/bin/isobench.
 *
 * isobench-runtime (-DOCI_RUNTIME): the same client for the runc-compatible CLI (app/oci_cli.py), whose
 * fallback is `isobench-runtime-py`; the request's argv[0] says which program the worker runs. conmon
 * runs one runtime process per verb (create, start, state, kill, delete), and a Python process each
 * costs 5x runc's. One difference matters: `create` must leave the container's first process behind
 * as OUR child (we exit; conmon, a subreaper, then reaps it, as it does runc's init). So the worker,
 * which does all of create's work, asks us to spawn the start helper:
 *     worker -> client  "S <new|host|join> <argv0> <path>\n" with SCM_RIGHTS: a reply pipe, the
 *                       helper's fds 0..5, and (join) the PID namespace to enter
 *     client -> pipe    "<pid>\n", or "E <message>\n"
 * and `F <reason>` from the worker (any time before its X) hands a verb back to the Python CLI here
 * (`run`, `exec`: the caller waits for those processes itself). isobench-runtime never starts a
 * server: under conmon (a subreaper) the server would become conmon's orphan, and conmon waits for
 * all its children before it exits (seen here: it hung until the server's idle exit). It uses a
 * server that runs (`isobench server start`, or the one any `isobench` command started on first use)
 * and otherwise runs isobench-runtime-py. conmon runs the runtime with an environment of its own
 * (no ISOBENCH_SERVER_SOCKET), so under podman that is the default socket.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#ifdef OCI_RUNTIME
#define PROGRAM "isobench-runtime"
#else
#define PROGRAM "isobench"
#endif
#define PY_ENTRY PROGRAM "-py"
#define MAGIC "ISB1"
#define DEFAULT_SOCKET "/run/isobench/server.sock" /* core.paths.run_dir(); ISOBENCH_RUN_DIR moves it */
#define SOCKET_ENV "ISOBENCH_SERVER_SOCKET"
#define MAX_REQUEST_BYTES (4u << 20)
#define EXIT_LOST 125
#define AUTOSTART_ENV "ISOBENCH_SERVER_AUTOSTART"
#define IDLE_ENV "ISOBENCH_SERVER_IDLE_S"
#define DEFAULT_IDLE_S "900"

extern char **environ;

static const int FORWARDED[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH};
#define NFORWARDED (sizeof FORWARDED / sizeof FORWARDED[0])

static volatile sig_atomic_t worker_pid;
static sigset_t saved_mask;

/* "ISOBENCH_CLIENT_SIGIGN=<hex mask>", /proc/PID/status SigIgn style: the signals ignored when we started.
 * Sent in the request's environment (not ours): the worker ignores them as a Python CLI exec'd here
 * would have inherited them (app.server.worker). Before this, a client started with SIGINT ignored
 * (a non-interactive shell's background job, nohup, a CI runner) dropped a Ctrl-C of `run` that the
 * Python CLI forwards. */
#define SIGIGN_ENV "ISOBENCH_CLIENT_SIGIGN"
static char sigign_entry[64];

static void note_ignored_signals(void) {
    unsigned long long mask = 0;
    for (int s = 1; s < 64; s++) {
        struct sigaction old;
        if (sigaction(s, NULL, &old) == 0 && !(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_IGN)
            mask |= 1ULL << (s - 1);
    }
    if (mask)
        snprintf(sigign_entry, sizeof sigign_entry, "%s=%llx", SIGIGN_ENV, mask);
}

static void forward(int sig, siginfo_t *info, void *ctx) {
    (void)ctx;
    int saved = errno;
    pid_t pid = (pid_t)worker_pid;
    if (pid > 0) {
        /* From the terminal (Ctrl-C, Ctrl-\, resize, hang-up) the kernel signals the whole foreground
         * group, so the worker's group gets it (its subprocesses too); a kill(2) aimed at this one
         * process goes to the worker only. */
        if (info->si_code != SI_KERNEL || kill(-pid, sig) != 0)
            kill(pid, sig);
    }
    errno = saved;
}

/* The Python CLI `isobench-py` next to this binary, into exe (PATH_MAX bytes); 0, or -1 with errno. */
static int python_cli(char *exe) {
    ssize_t n = readlink("/proc/self/exe", exe, PATH_MAX - 16);
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    const char *deleted = " (deleted)"; /* replaced by `make setup` while we ran */
    size_t dl = strlen(deleted);
    if ((size_t)n > dl && strcmp(exe + n - dl, deleted) == 0)
        exe[n - dl] = '\0';
    char *slash = strrchr(exe, '/');
    strcpy(slash ? slash + 1 : exe, PY_ENTRY);
    return 0;
}

/* Exec the Python CLI next to this binary with our argv; never returns. */
static void run_python(char **argv) {
    char exe[PATH_MAX];
    sigprocmask(SIG_SETMASK, &saved_mask, NULL); /* the mask survives execve */
    if (python_cli(exe) != 0) {
        fprintf(stderr, PROGRAM ": cannot find this program's path (/proc/self/exe): %s\n", strerror(errno));
        exit(127);
    }
    execv(exe, argv);
    fprintf(stderr, PROGRAM ": no isobench server, and cannot run %s: %s\n", exe, strerror(errno));
    exit(127);
}

#ifndef OCI_RUNTIME
/* Nobody listens on `path`: start a server there in the background, unless turned off. The starter
 * is a detached grandchild (setsid, stdio on /dev/null: it holds none of the caller's pipes, so a
 * caller reading our output to EOF does not wait for it); `server start` refuses quietly when a
 * concurrent client's start won the socket. */
static void autostart(const char *path) {
    const char *on = getenv(AUTOSTART_ENV);
    if (on && (!strcmp(on, "0") || !strcmp(on, "no") || !strcmp(on, "false")))
        return;
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir)
        *slash = '\0';
    if (geteuid() != 0 && access(dir, W_OK) != 0)
        return; /* could not make the socket there: do not try on every command */
    const char *idle = getenv(IDLE_ENV);
    if (!idle || !*idle)
        idle = DEFAULT_IDLE_S;
    char exe[PATH_MAX];
    if (python_cli(exe) != 0)
        return;
    pid_t pid = fork();
    if (pid < 0)
        return;
    if (pid == 0) {
        if (fork() != 0)
            _exit(0);
        setsid();
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
            if (null > 2)
                close(null);
        }
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        char *args[] = {exe, "server", "start", "--socket", (char *)path, "--idle-timeout", (char *)idle, NULL};
        execv(exe, args);
        _exit(127);
    }
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}
#endif

static int connect_server(const char *path) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* umask, cwd, argc, argv..., environ..., each NUL-terminated, behind "ISB1" and a u32 BE length. */
static char *build_request(int argc, char **argv, size_t *len_out) {
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd))
        return NULL; /* deleted or unreachable cwd: the Python CLI behaves as it would there */
    mode_t mask = umask(0);
    umask(mask);
    char head[32];
    int hl = snprintf(head, sizeof head, "%04o", (unsigned)mask) + 1;
    char argc_text[16];
    int al = snprintf(argc_text, sizeof argc_text, "%d", argc) + 1;
    size_t total = (size_t)hl + strlen(cwd) + 1 + (size_t)al;
    total += strlen(PROGRAM) + 1;
    for (int i = 1; i < argc; i++)
        total += strlen(argv[i]) + 1;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, SIGIGN_ENV "=", sizeof SIGIGN_ENV) != 0)
            total += strlen(*e) + 1;
    if (sigign_entry[0])
        total += strlen(sigign_entry) + 1;
    if (total > MAX_REQUEST_BYTES)
        return NULL;
    char *buf = malloc(8 + total), *p = buf + 8;
    if (!buf)
        return NULL;
    memcpy(buf, MAGIC, 4);
    uint32_t be = htobe32((uint32_t)total);
    memcpy(buf + 4, &be, 4);
#define PUT(s) do { size_t l_ = strlen(s) + 1; memcpy(p, (s), l_); p += l_; } while (0)
    PUT(head);
    PUT(cwd);
    PUT(argc_text);
    PUT(PROGRAM); /* argv[0]: which program the worker runs (a symlink's name does not choose) */
    for (int i = 1; i < argc; i++)
        PUT(argv[i]);
    for (char **e = environ; *e; e++)
        if (strncmp(*e, SIGIGN_ENV "=", sizeof SIGIGN_ENV) != 0)
            PUT(*e);
    if (sigign_entry[0])
        PUT(sigign_entry);
#undef PUT
    *len_out = 8 + total;
    return buf;
}

/* Send the request with fds 0, 1, 2 attached to its first bytes. 0 on success, -1 on failure. */
static int send_request(int fd, const char *buf, size_t len) {
    int fds[3] = {0, 1, 2};
    union {
        char raw[CMSG_SPACE(sizeof fds)];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof ctl);
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.raw,
                         .msg_controllen = sizeof ctl.raw};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    ssize_t n;
    do
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    for (size_t off = (size_t)n; off < len; off += (size_t)n) {
        do
            n = send(fd, buf + off, len - off, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
            return -1;
    }
    return 0;
}

static void install_forwarding(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = forward;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigfillset(&sa.sa_mask);
    for (size_t i = 0; i < NFORWARDED; i++) {
        /* Even one ignored when we started (nohup, a shell's background job): the worker ignores it
         * too (SIGIGN_ENV), as the Python CLI would have, and the `run` verb's signal proxy forwards
         * it all the same, as the Python CLI's does (and docker's sigproxy). */
        sigaction(FORWARDED[i], &sa, NULL);
    }
}

/* File descriptors that arrived with the server's and worker's messages, in order (SCM_RIGHTS). */
#define MAX_QUEUED_FDS 32
static int queued[MAX_QUEUED_FDS];
static int nqueued;

static void queue_fds(struct msghdr *msg) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *fds = (int *)CMSG_DATA(c);
        for (int i = 0; i < n; i++) {
            if (nqueued < MAX_QUEUED_FDS)
                queued[nqueued++] = fds[i];
            else
                close(fds[i]);
        }
    }
}

/* Take the first `n` queued fds into `out`; -1 when fewer arrived. */
static int take_fds(int *out, int n) {
    if (nqueued < n)
        return -1;
    memcpy(out, queued, (size_t)n * sizeof(int));
    nqueued -= n;
    memmove(queued, queued + n, (size_t)nqueued * sizeof(int));
    return 0;
}

/* "S <new|host|join> <argv0> <path>": fork and exec `path` as our child with the queued fds as its
 * 0..5, in a new PID namespace (it is PID 1 there), ours, or the one sent; the pid (or "E why") goes
 * to the reply pipe. Signals: default dispositions and an empty mask in the child (the helper resets
 * them again itself). Returns 0, or -1 when the message itself is malformed. */
#define SPAWN_FDS 6
static int spawn_for_worker(const char *arg) {
    char mode[8], argv0[256];
    int used = 0;
    if (sscanf(arg, "%7s %255s %n", mode, argv0, &used) != 2 || used <= 0 || !arg[used])
        return -1;
    const char *path = arg + used;
    int join = strcmp(mode, "join") == 0;
    if (!join && strcmp(mode, "new") != 0 && strcmp(mode, "host") != 0)
        return -1;
    int fds[1 + SPAWN_FDS + 1];
    int nfds = 1 + SPAWN_FDS + join;
    if (take_fds(fds, nfds) != 0)
        return -1;
    char reply[160];
    pid_t pid = -1;
    if (strcmp(mode, "new") == 0 && unshare(CLONE_NEWPID) != 0)
        snprintf(reply, sizeof reply, "E unshare(CLONE_NEWPID): %s\n", strerror(errno));
    else if (join && setns(fds[1 + SPAWN_FDS], CLONE_NEWPID) != 0)
        snprintf(reply, sizeof reply, "E setns to the PID namespace: %s\n", strerror(errno));
    else if ((pid = fork()) < 0)
        snprintf(reply, sizeof reply, "E fork: %s\n", strerror(errno));
    else if (pid == 0) {
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        for (size_t i = 0; i < NFORWARDED; i++)
            sigaction(FORWARDED[i], &dfl, NULL);
        int moved[SPAWN_FDS];
        for (int i = 0; i < SPAWN_FDS; i++) /* above 9 first: a source may be one of the targets */
            if ((moved[i] = fcntl(fds[1 + i], F_DUPFD_CLOEXEC, 10)) < 0)
                _exit(125);
        for (int i = 0; i < SPAWN_FDS; i++)
            if (dup2(moved[i], i) < 0) /* the copy at i is not close-on-exec */
                _exit(125);
        syscall(SYS_close_range, SPAWN_FDS, ~0U, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        char *args[] = {argv0, NULL}, *env[] = {NULL};
        execve(path, args, env);
        _exit(127);
    } else
        snprintf(reply, sizeof reply, "%d\n", (int)pid);
    ssize_t n;
    do
        n = write(fds[0], reply, strlen(reply));
    while (n < 0 && errno == EINTR);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
    return 0;
}

/* One read of the connection, collecting any fds sent with it. */
static ssize_t receive(int fd, char *buf, size_t len) {
    union {
        char raw[CMSG_SPACE(sizeof(int) * (1 + SPAWN_FDS + 1))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.raw, .msg_controllen = sizeof ctl.raw};
    ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (n >= 0)
        queue_fds(&msg);
    return n;
}

int main(int argc, char **argv) {
    sigemptyset(&saved_mask);
    note_ignored_signals();
#ifndef OCI_RUNTIME
    if (argc > 1 && strcmp(argv[1], "server") == 0)
        run_python(argv);
#endif
    const char *path = getenv(SOCKET_ENV);
    static char run_sock[4096];
    const char *run_dir = getenv("ISOBENCH_RUN_DIR"); /* as core.paths.run_dir() */
    if ((!path || !*path) && run_dir && *run_dir &&
        snprintf(run_sock, sizeof run_sock, "%s/server.sock", run_dir) < (int)sizeof run_sock)
        path = run_sock;
    if (!path || !*path)
        path = DEFAULT_SOCKET;
    for (int i = 0; i < 3; i++)
        if (fcntl(i, F_GETFD) < 0) /* a closed stdio fd cannot be passed; Python copes with it */
            run_python(argv);
    int fd = connect_server(path);
    if (fd < 0) {
#ifndef OCI_RUNTIME
        if (errno == ENOENT || errno == ECONNREFUSED)
            autostart(path);
#endif
        run_python(argv);
    }
    size_t len = 0;
    char *req = build_request(argc, argv, &len);
    if (!req)
        run_python(argv);

    /* Blocked until the worker's pid is known: a signal in between is then forwarded, not lost (and
     * does not kill us while the worker runs on unsignalled). */
    sigset_t block;
    sigemptyset(&block);
    for (size_t i = 0; i < NFORWARDED; i++)
        sigaddset(&block, FORWARDED[i]);
    sigprocmask(SIG_BLOCK, &block, &saved_mask);

    /* A failed send still reads: a server that refused the request (E, F) said why before closing. */
    int sent = send_request(fd, req, len) == 0;
    free(req);

    char buf[4096];
    size_t have = 0;
    for (;;) {
        char *nl = memchr(buf, '\n', have);
        if (!nl) {
            if (have == sizeof buf) {
                fprintf(stderr, PROGRAM ": unreadable reply from the isobench server on %s\n", path);
                return EXIT_LOST;
            }
            ssize_t n = receive(fd, buf + have, sizeof buf - have);
            if (n < 0 && errno == EINTR)
                continue;
            if (n > 0) {
                have += (size_t)n;
                continue;
            }
            if (!worker_pid && (!sent || (n < 0 && errno == ECONNRESET)))
                run_python(argv); /* closed before reading our request: nothing ran */
            if (worker_pid)
                fprintf(stderr, PROGRAM ": lost the isobench server (worker %d)\n", (int)worker_pid);
            else
                fprintf(stderr, PROGRAM ": lost the isobench server on %s before it started the command\n",
                        path);
            return EXIT_LOST;
        }
        *nl = '\0';
        char kind = buf[0];
        const char *arg = buf[0] && buf[1] == ' ' ? buf + 2 : "";
        if (kind == 'P' && !worker_pid) {
            worker_pid = (sig_atomic_t)atoi(arg);
            install_forwarding();
            sigprocmask(SIG_SETMASK, &saved_mask, NULL); /* pending signals are forwarded now */
        } else if (kind == 'X') {
            return atoi(arg) & 0xff;
        } else if (kind == 'E') {
            fprintf(stderr, PROGRAM ": %s\n", arg);
            return EXIT_LOST;
        } else if (kind == 'F') { /* from the server before P, or from the worker before its X */
            close(fd);
            for (int i = 0; i < nqueued; i++)
                close(queued[i]);
            run_python(argv);
        } else if (kind == 'S' && spawn_for_worker(arg) == 0) {
            /* spawned (or the failure told on the reply pipe); the worker goes on */
        } else {
            fprintf(stderr, PROGRAM ": unexpected reply from the isobench server: %.80s\n", buf);
            return EXIT_LOST;
        }
        have -= (size_t)(nl + 1 - buf);
        memmove(buf, nl + 1, have);
    }
}
