/* isobench guest helper: drop to UID:GID (image USER) and exec the workload. */
#define _GNU_SOURCE
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: setuid UID GID CMD...\n"); return 125; }
  uid_t u = (uid_t)strtoul(argv[1], 0, 10); gid_t g = (gid_t)strtoul(argv[2], 0, 10);
  if (setgroups(1, &g) || setgid(g) || setuid(u)) { perror("isobench setuid"); return 125; }
  execvp(argv[3], argv + 3);
  perror(argv[3]);
  return 127;
}
