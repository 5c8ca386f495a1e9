/* isobench-monitor: the idle part of a detached container's monitor (like conmon, minus the logs).
 *
 * The Python monitor creates and starts the container, then execve()s this program: children survive
 * execve, so the container's PID 1 is still our child. We only wait for it, record its raw wait status
 * atomically (temp + rename), and execve the Python finisher that frees the cgroup and network and
 * writes the final state. While the container runs, the cost on the host is this static binary
 * (a few hundred KiB of RSS) instead of a Python interpreter (tens of MiB).
 *
 * argv: isobench-<id> PID STATUS_FILE FINISHER_ARGV...
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s PID STATUS_FILE FINISHER...\n", argv[0]);
        return 2;
    }
    prctl(PR_SET_NAME, argv[0], 0, 0, 0);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    pid_t pid = (pid_t)atoi(argv[1]);
    int status = -1;
    for (;;) {
        pid_t r = waitpid(pid, &status, 0);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            status = -1;
            break;
        }
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[2]);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
        dprintf(fd, "%d\n", status);
        close(fd);
        rename(tmp, argv[2]);
    }
    execv(argv[3], argv + 3);
    perror("isobench-monitor: exec finisher");
    return 127;
}
