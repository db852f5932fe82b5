/* The sandbox ("pause") process of every Pod on the test node: holds the Pod's
 * namespaces open, reaps orphaned children and exits on SIGINT/SIGTERM.
 * Built statically by tests/scripts/cluster.sh into the pause image. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) {
  (void)sig;
  _exit(0);
}

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    puts("imagewarden-pause");
    return 0;
  }
  if (getpid() != 1) {
    fprintf(stderr, "warning: pause should be the first process of its PID namespace\n");
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = stop;
  if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0) {
    perror("sigaction");
    return 1;
  }
  sa.sa_handler = reap;
  sa.sa_flags = SA_NOCLDSTOP;
  if (sigaction(SIGCHLD, &sa, NULL) < 0) {
    perror("sigaction");
    return 2;
  }
  for (;;) {
    pause();
  }
}
