/* isoprobe: one system call per sub-command, for the breakout probes (runtime/security/probes.py).
 *
 * Busybox has no applet for keyctl, bpf, ptrace, raw sockets, init_module or settimeofday, so this tiny
 * static program makes exactly one attempt and prints one line:
 *   "OK ..."      the call succeeded (exit 0)         -> the wall did not hold
 *   "DENIED ..."  refused by permission / filter     -> blocked (exit 1)
 *   "REACHED ..." the kernel got past the permission checks and failed for another reason (exit 0)
 * Every attempt is harmless if it succeeds: the module is garbage, the time is not changed
 * (settimeofday(NULL, NULL) only checks CAP_SYS_TIME), the map is closed, the tracee is released.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int denied(int e) { return e == EPERM || e == EACCES || e == ENOSYS || e == ESRCH; }

static int report(const char *what, long ret) {
    if (ret >= 0) { printf("OK %s\n", what); return 0; }
    int e = errno;
    if (denied(e)) { printf("DENIED %s: %s\n", what, strerror(e)); return 1; }
    printf("REACHED %s: %s\n", what, strerror(e));
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: isoprobe keyctl|bpf|ptrace PID|rawsock|module|settime\n"); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "keyctl")) {          /* KEYCTL_JOIN_SESSION_KEYRING, anonymous: process-local */
        return report("keyctl(JOIN_SESSION_KEYRING)", syscall(SYS_keyctl, 1, 0L, 0L, 0L, 0L));
    } else if (!strcmp(cmd, "bpf")) {      /* BPF_MAP_CREATE of a 1-entry array */
        unsigned int attr[32] = {0};
        attr[0] = 2; attr[1] = 4; attr[2] = 4; attr[3] = 1;
        long fd = syscall(SYS_bpf, 0, attr, sizeof attr);
        int rc = report("bpf(BPF_MAP_CREATE)", fd);
        if (fd >= 0) close((int)fd);
        return rc;
    } else if (!strcmp(cmd, "ptrace") && argc > 2) {  /* PTRACE_SEIZE does not stop the tracee */
        pid_t pid = (pid_t)atoi(argv[2]);
        long r = ptrace(0x4206, pid, 0L, 0L);
        int rc = report("ptrace(SEIZE)", r);
        if (r >= 0) ptrace(PTRACE_DETACH, pid, 0L, 0L);
        return rc;
    } else if (!strcmp(cmd, "rawsock")) {
        int fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
        int rc = report("socket(AF_INET, SOCK_RAW)", fd);
        if (fd >= 0) close(fd);
        return rc;
    } else if (!strcmp(cmd, "module")) {  /* garbage image: the loader rejects it if it gets that far */
        static const char junk[64] = "not an ELF module";
        return report("init_module", syscall(SYS_init_module, junk, sizeof junk, ""));
    } else if (!strcmp(cmd, "settime")) {
        return report("settimeofday(NULL, NULL)", syscall(SYS_settimeofday, NULL, NULL));
    }
    fprintf(stderr, "isoprobe: unknown probe %s\n", cmd);
    return 2;
}
