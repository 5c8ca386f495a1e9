/* isobench-init: PID 1 of a container started with --init (tini in miniature).
 *
 * The runtime bind-mounts this static binary read-only at /dev/init and execs it instead of the
 * workload, after applying the container's security settings (which the workload then inherits).
 * It forks and execs the workload, forwards every catchable signal to it (a PID 1 without handlers
 * would ignore them), reaps every zombie re-parented to it, and exits with the workload's code:
 * exit N -> N, killed by signal N -> 128+N, command not found -> 127.
 *
 * argv: /dev/init -- CMD ARGS...
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int first = (argc > 1 && strcmp(argv[1], "--") == 0) ? 2 : 1;
    if (first >= argc) {
        fprintf(stderr, "usage: %s -- CMD [ARGS...]\n", argv[0]);
        return 2;
    }
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    pid_t child = fork();
    if (child < 0) {
        perror("isobench-init: fork");
        return 125;
    }
    if (child == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        execvp(argv[first], argv + first);
        int err = errno;
        if (err == ENOENT && strchr(argv[first], '/'))  /* a path is not looked up in $PATH */
            fprintf(stderr, "isobench: exec: \"%s\": no such file or directory\n", argv[first]);
        else if (err == ENOENT)
            fprintf(stderr, "isobench: exec: \"%s\": executable file not found in $PATH\n", argv[first]);
        else
            fprintf(stderr, "isobench: exec: \"%s\": %s\n", argv[first], strerror(err));
        _exit(err == ENOENT ? 127 : 126);
    }
    for (;;) {
        struct timespec guard = {1, 0};  /* SIGCHLD wakes us; the timeout only bounds a lost wake-up */
        siginfo_t info;
        int sig = sigtimedwait(&all, &info, &guard);
        if (sig > 0 && sig != SIGCHLD)
            kill(child, sig);
        int status;
        pid_t p;
        while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
            if (p == child)
                return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        if (p < 0 && errno == ECHILD)
            return 125;
    }
}
