/*
 * A keep-alive "Hello World" HTTP/1.1 server for bench:router's second container image.
 *
 * busybox httpd, the server of the test image, forks a process for every connection and closes it
 * after one response, so a benchmark against it measures fork() and TCP handshakes more than the
 * router. No busybox applet serves HTTP on a kept-alive connection, so this file is compiled with
 * `gcc -static` by the benchmark and put into the same busybox-static image (as base64 text: the
 * image builder writes text files), where the container decodes it with busybox's base64 at start.
 *
 * One thread, level-triggered epoll, 127.0.0.1:$PORT only. Every request head (up to the blank line)
 * gets the same fixed response; request bodies are not read, which is fine for the GETs that wrk and
 * Grove's router and health check send, and nothing else ever reaches it.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static const char RESPONSE[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\nHello World\n";
#define RESPONSE_LEN (sizeof RESPONSE - 1)
#define MAX_FDS 65536

/* Per connection: how much of "\r\n\r\n" the bytes read so far end with, and the responses owed. */
struct conn {
  unsigned char matched;
  unsigned owed;
  unsigned sent; /* bytes of the first owed response already written */
};
static struct conn conns[MAX_FDS];
static int ep;

/* PID 1 of a PID namespace ignores signals it has no handler for: without this a stop waits the grace. */
static void on_term(int sig) {
  (void)sig;
  _exit(0);
}

static void drop(int fd) {
  epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
  close(fd);
}

/* Writes what is owed; returns 0 when done or blocked (then waits for EPOLLOUT), -1 on error. */
static int flush(int fd) {
  struct conn *c = &conns[fd];
  while (c->owed > 0) {
    ssize_t n = write(fd, RESPONSE + c->sent, RESPONSE_LEN - c->sent);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return -1;
      struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.fd = fd};
      epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
      return 0;
    }
    c->sent += (unsigned)n;
    if (c->sent == RESPONSE_LEN) {
      c->sent = 0;
      c->owed--;
    }
  }
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = fd};
  epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
  return 0;
}

/* Counts request heads in what arrived; the blank line may be split across reads. */
static int readable(int fd) {
  char buf[16384];
  struct conn *c = &conns[fd];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n == 0) return -1;
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      return -1;
    }
    for (ssize_t i = 0; i < n; i++) {
      char want = (c->matched % 2 == 0) ? '\r' : '\n';
      if (buf[i] == want) {
        if (++c->matched == 4) {
          c->matched = 0;
          c->owed++;
        }
      } else {
        c->matched = buf[i] == '\r' ? 1 : 0;
      }
    }
    if ((size_t)n < sizeof buf) break;
  }
  return flush(fd);
}

int main(void) {
  const char *port = getenv("PORT");
  if (!port) {
    fprintf(stderr, "PORT is not set\n");
    return 2;
  }
  signal(SIGTERM, on_term);
  signal(SIGINT, on_term);
  signal(SIGPIPE, SIG_IGN);

  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(port)), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (bind(ls, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(ls, 1024) < 0) {
    perror("bind/listen");
    return 1;
  }
  ep = epoll_create1(0);
  struct epoll_event lev = {.events = EPOLLIN, .data.fd = ls};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &lev);
  printf("listening on 127.0.0.1:%s\n", port);
  fflush(stdout);

  struct epoll_event events[256];
  for (;;) {
    int n = epoll_wait(ep, events, 256, -1);
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < n; i++) {
      int fd = events[i].data.fd;
      if (fd == ls) {
        int c;
        while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          if (c >= MAX_FDS) {
            close(c);
            continue;
          }
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          conns[c] = (struct conn){0};
          struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
        }
        continue;
      }
      int failed = 0;
      if (events[i].events & (EPOLLERR | EPOLLHUP)) failed = 1;
      if (!failed && (events[i].events & EPOLLIN)) failed = readable(fd) < 0;
      if (!failed && (events[i].events & EPOLLOUT)) failed = flush(fd) < 0;
      /* The peer half-closed and everything it asked for was answered. */
      if (!failed && (events[i].events & EPOLLRDHUP) && conns[fd].owed == 0) failed = 1;
      if (failed) drop(fd);
    }
  }
}
