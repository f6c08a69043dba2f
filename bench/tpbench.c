// tprosshy benchmark load tool: a fast target server and the clients that drive it.
//
//   tpbench serve PORT                 epoll HTTP/1.0 target (one request per connection):
//                                      GET /bytes/N, POST /upload (Content-Length), GET /hello
//   tpbench get   HOST PORT BYTES FLOWS [-s SOCKS_HOST:PORT]   download, BYTES per flow
//   tpbench post  HOST PORT BYTES FLOWS [-s ...]               upload, BYTES per flow
//   tpbench short HOST PORT COUNT [-s ...]   sequential connect, GET /hello, read, close
//   tpbench many  HOST PORT COUNT [-s ...]   COUNT flows open at once, then a request each
//   common: -t SECONDS (overall deadline, default 60); -S: with -s, await the SOCKS reply
//           before sending the request (default: greeting, CONNECT and request in one write)
//   get/post: -w BYTES  bytes per call: each recv() of a download's body asks for at most
//           BYTES, each send() of an upload's body writes BYTES (default and most 1 MiB)
//
// Clients print one line of key=value pairs (parsed by bench/run) and exit 0 only if every
// flow did what it should. Timing is wall time inside this process.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { BUF = 1 << 20 };
static char zeros[BUF];

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void raise_nofile(void) {
  struct rlimit r;
  if (getrlimit(RLIMIT_NOFILE, &r) == 0) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

// ------------------------------------------------------------------------------ server

struct conn {
  int fd;
  int state;  // 0 head, 1 writing body, 2 draining upload
  char head[4096];
  size_t head_len;
  uint64_t left;   // bytes still to send (state 1) or to read (state 2)
  uint64_t count;  // upload bytes read
  char out[256];   // pending header / short reply
  size_t out_len, out_off;
};

static void conn_close(int ep, struct conn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c);
}

static void set_reply(struct conn *c, const char *body) {
  c->out_len = snprintf(c->out, sizeof c->out,
                        "HTTP/1.0 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                        strlen(body), body);
  c->out_off = 0;
  c->left = 0;
  c->state = 1;
}

// Returns 0 to keep the connection, -1 to close it.
static int conn_write(struct conn *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    c->out_off += n;
  }
  while (c->left > 0) {
    size_t k = c->left < BUF ? c->left : BUF;
    ssize_t n = send(c->fd, zeros, k, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN ? 0 : -1;
    c->left -= n;
  }
  return -1;  // all sent: close (FIN after the queued data)
}

static int conn_head(struct conn *c) {
  char *end = memmem(c->head, c->head_len, "\r\n\r\n", 4);
  if (!end) return c->head_len < sizeof c->head - 1 ? 0 : -1;
  size_t head_end = end - c->head + 4;
  c->head[c->head_len] = 0;
  if (strncmp(c->head, "GET /bytes/", 11) == 0) {
    c->left = strtoull(c->head + 11, NULL, 10);
    c->out_len = snprintf(c->out, sizeof c->out,
                          "HTTP/1.0 200 OK\r\nContent-Length: %llu\r\nConnection: close\r\n\r\n",
                          (unsigned long long)c->left);
    c->out_off = 0;
    c->state = 1;
    return conn_write(c);
  }
  if (strncmp(c->head, "POST /upload", 12) == 0) {
    char *cl = strcasestr(c->head, "\r\ncontent-length:");
    if (!cl) return -1;
    uint64_t total = strtoull(cl + 17, NULL, 10);
    uint64_t have = c->head_len - head_end;
    if (have > total) return -1;
    c->count = have;
    c->left = total - have;
    c->state = 2;
    if (c->left == 0) {
      char body[32];
      snprintf(body, sizeof body, "%llu\n", (unsigned long long)c->count);
      set_reply(c, body);
      return conn_write(c);
    }
    return 0;
  }
  if (strncmp(c->head, "GET /hello", 10) == 0) {
    set_reply(c, "hello\n");
    return conn_write(c);
  }
  return -1;
}

static int conn_read(struct conn *c) {
  if (c->state == 0) {
    for (;;) {
      ssize_t n = recv(c->fd, c->head + c->head_len, sizeof c->head - 1 - c->head_len, 0);
      if (n == 0) return -1;
      if (n < 0) return errno == EAGAIN ? 0 : -1;
      c->head_len += n;
      int r = conn_head(c);
      if (r != 0) return r;
      if (c->state != 0) break;
    }
  }
  if (c->state == 2) {
    static char sink[BUF];
    while (c->left > 0) {
      ssize_t n = recv(c->fd, sink, c->left < BUF ? c->left : BUF, 0);
      if (n == 0) return -1;
      if (n < 0) return errno == EAGAIN ? 0 : -1;
      c->left -= n;
      c->count += n;
    }
    char body[32];
    snprintf(body, sizeof body, "%llu\n", (unsigned long long)c->count);
    set_reply(c, body);
    return conn_write(c);
  }
  return 0;
}

static int serve(int port) {
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 8192)) {
    perror("tpbench serve: bind/listen");
    return 1;
  }
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  printf("listening %d\n", port);
  fflush(stdout);
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    for (int i = 0; i < n; i++) {
      struct conn *c = evs[i].data.ptr;
      if (!c) {
        int fd;
        while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          c = calloc(1, sizeof *c);
          c->fd = fd;
          struct epoll_event e = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
        }
        continue;
      }
      int r = 0;
      if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) r = conn_read(c);
      if (r == 0 && c->state == 1 && (evs[i].events & EPOLLOUT)) r = conn_write(c);
      if (r != 0) conn_close(ep, c);
    }
  }
}

// ------------------------------------------------------------------------------ clients

static struct {
  struct sockaddr_in dst, socks;
  int use_socks;
  int stepwise;  // -S: await the SOCKS reply before sending the request, as most clients do
  size_t io;     // -w: bytes per send() of an upload's body / per recv() of a download's body
  double deadline;
} g = {.io = BUF};

static int parse_addr(struct sockaddr_in *a, const char *host, int port) {
  memset(a, 0, sizeof *a);
  a->sin_family = AF_INET;
  a->sin_port = htons(port);
  return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

static void set_timeout(int fd) {
  double left = g.deadline - now();
  if (left < 0.001) left = 0.001;
  struct timeval tv = {(time_t)left, (suseconds_t)((left - (time_t)left) * 1e6)};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int send_all(int fd, const void *p, size_t n) {
  const char *b = p;
  while (n > 0) {
    ssize_t k = send(fd, b, n, MSG_NOSIGNAL);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    b += k;
    n -= k;
  }
  return 0;
}

static int recv_exact(int fd, void *p, size_t n) {
  char *b = p;
  while (n > 0) {
    ssize_t k = recv(fd, b, n, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    b += k;
    n -= k;
  }
  return 0;
}

// Connects (to the SOCKS server if one is set) and sends the request; with SOCKS the
// greeting, CONNECT and request go in one write, as OpenSSH's -D accepts.
static int open_flow(const char *req, size_t req_len) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  set_timeout(fd);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in *to = g.use_socks ? &g.socks : &g.dst;
  if (connect(fd, (struct sockaddr *)to, sizeof *to) < 0) {
    close(fd);
    return -1;
  }
  char msg[512];
  size_t n = 0;
  if (g.use_socks) {
    memcpy(msg, "\x05\x01\x00\x05\x01\x00\x01", 7);
    memcpy(msg + 7, &g.dst.sin_addr, 4);
    memcpy(msg + 11, &g.dst.sin_port, 2);
    n = 13;
    if (g.stepwise) {
      unsigned char r[12];
      if (send_all(fd, msg, n) < 0 || recv_exact(fd, r, sizeof r) < 0 || r[1] != 0 || r[3] != 0)
        return close(fd), -1;
      n = 0;
    }
  }
  if (req_len > sizeof msg - n) return close(fd), -1;
  memcpy(msg + n, req, req_len);
  n += req_len;
  if (send_all(fd, msg, n) < 0) return close(fd), -1;
  return fd;
}

static int socks_reply(int fd) {
  if (!g.use_socks || g.stepwise) return 0;
  unsigned char r[12];  // 2 greeting + 10 CONNECT reply (IPv4 bound address)
  if (recv_exact(fd, r, sizeof r) < 0) return -1;
  return r[0] == 5 && r[1] == 0 && r[2] == 5 && r[3] == 0 && r[5] == 1 ? 0 : -1;
}

// Reads an HTTP response up to its Content-Length (not to EOF: ssh -N delays the channel
// close by a delayed-ACK round, which is not what a client waits for); returns the body
// length, or -1. If body is set, the body's first bytes are copied there (up to cap).
static int64_t read_response(int fd, char *body, size_t cap) {
  static __thread char buf[BUF];
  size_t have = 0;
  char *end = NULL;
  while (!end) {
    if (have == 4096) return -1;
    ssize_t k = recv(fd, buf + have, 4096 - have, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    have += k;
    end = memmem(buf, have, "\r\n\r\n", 4);
  }
  *end = 0;
  if (strncmp(buf, "HTTP/1.0 200", 12) != 0) return -1;
  char *cl = strcasestr(buf, "\r\ncontent-length:");
  if (!cl) return -1;
  int64_t want = strtoll(cl + 17, NULL, 10);
  int64_t got = have - (end + 4 - buf);
  if (body && cap) {
    size_t c = got < (int64_t)cap ? (size_t)got : cap;
    memcpy(body, end + 4, c);
    body[c < cap ? c : cap - 1] = 0;
  }
  while (got < want) {
    ssize_t k = recv(fd, buf, (size_t)(want - got) < g.io ? (size_t)(want - got) : g.io, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return -1;
    got += k;
  }
  return got == want ? got : -1;
}

struct flow_arg {
  int upload;
  uint64_t bytes;
  int ok;
};

static void *bulk_flow(void *p) {
  struct flow_arg *f = p;
  char req[128];
  int n = f->upload ? snprintf(req, sizeof req,
                               "POST /upload HTTP/1.0\r\nContent-Length: %llu\r\n\r\n",
                               (unsigned long long)f->bytes)
                    : snprintf(req, sizeof req, "GET /bytes/%llu HTTP/1.0\r\n\r\n",
                               (unsigned long long)f->bytes);
  int fd = open_flow(req, n);
  if (fd < 0) return NULL;
  if (f->upload) {
    uint64_t left = f->bytes;
    while (left > 0) {
      size_t k = left < g.io ? left : g.io;
      if (send_all(fd, zeros, k) < 0) goto out;
      left -= k;
    }
  }
  if (socks_reply(fd) < 0) goto out;
  char body[64];
  int64_t got = read_response(fd, body, sizeof body);
  f->ok = f->upload ? (got > 0 && strtoull(body, NULL, 10) == f->bytes)
                    : (got == (int64_t)f->bytes);
out:
  close(fd);
  return NULL;
}

static int bulk(int upload, uint64_t bytes, int flows) {
  pthread_t th[256];
  struct flow_arg args[256];
  if (flows < 1 || flows > 256) return 2;
  double t0 = now();
  for (int i = 0; i < flows; i++) {
    args[i] = (struct flow_arg){upload, bytes, 0};
    pthread_create(&th[i], NULL, bulk_flow, &args[i]);
  }
  int ok = 0;
  for (int i = 0; i < flows; i++) {
    pthread_join(th[i], NULL);
    ok += args[i].ok;
  }
  double secs = now() - t0;
  printf("ok=%d flows=%d bytes=%llu io=%zu secs=%.6f mbps=%.2f\n", ok, flows,
         (unsigned long long)bytes * flows, g.io, secs, bytes * (double)flows / secs / 1e6);
  return ok == flows ? 0 : 1;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int short_conns(int count) {
  static const char req[] = "GET /hello HTTP/1.0\r\n\r\n";
  double *ttfb = calloc(count, sizeof *ttfb);
  int ok = 0;
  double t0 = now();
  for (int i = 0; i < count && now() < g.deadline; i++) {
    double s = now();
    int fd = open_flow(req, sizeof req - 1);
    if (fd < 0) continue;
    char first;
    if (socks_reply(fd) == 0 && recv(fd, &first, 1, MSG_PEEK) == 1) {
      ttfb[ok] = now() - s;
      char body[16];
      if (read_response(fd, body, sizeof body) == 6 && strcmp(body, "hello\n") == 0) ok++;
    }
    close(fd);
  }
  double secs = now() - t0;
  qsort(ttfb, ok, sizeof *ttfb, cmp_double);
  double p50 = ok ? ttfb[ok / 2] : 0, p99 = ok ? ttfb[(int)(ok * 0.99)] : 0;
  printf("ok=%d count=%d secs=%.6f cps=%.1f p50_ms=%.3f p99_ms=%.3f\n", ok, count, secs,
         ok / secs, p50 * 1e3, p99 * 1e3);
  free(ttfb);
  return ok == count ? 0 : 1;
}

// Every flow is opened (and its SOCKS request sent) before any sends its HTTP request, so
// COUNT flows are open at once; then each asks for 4 KiB and every answer is read, all at
// once with poll(2), so one stuck flow costs only itself.
static int many(int count) {
  enum { BODY = 4096, CAP = 8192 };
  int *fds = calloc(count, sizeof *fds);
  struct pollfd *pfd = calloc(count, sizeof *pfd);
  int *idx = calloc(count, sizeof *idx);
  char(*buf)[CAP] = calloc(count, CAP);
  size_t *have = calloc(count, sizeof *have);
  int opened = 0, ok = 0;
  double t0 = now();
  // Past the deadline the rest count as failed without touching the network, so the
  // partial result is still printed.
  for (int i = 0; i < count; i++) {
    fds[i] = now() < g.deadline ? open_flow("", 0) : -1;
    if (fds[i] >= 0) opened++;
  }
  double t_open = now() - t0;
  char req[64];
  int n = snprintf(req, sizeof req, "GET /bytes/%d HTTP/1.0\r\n\r\n", BODY);
  int live = 0;
  for (int i = 0; i < count; i++) {
    if (fds[i] < 0) continue;
    if (send_all(fds[i], req, n) < 0) {
      close(fds[i]);
      continue;
    }
    fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
    idx[live] = i;
    pfd[live++] = (struct pollfd){.fd = fds[i], .events = POLLIN};
  }
  const size_t skip = g.use_socks ? 12 : 0;
  while (live > 0) {
    int left_ms = (int)((g.deadline - now()) * 1000);
    if (left_ms <= 0 || poll(pfd, live, left_ms) <= 0) break;
    for (int k = 0; k < live; k++) {
      if (!pfd[k].revents) continue;
      int i = idx[k];
      ssize_t r = recv(pfd[k].fd, buf[i] + have[i], CAP - have[i], 0);
      if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      int finished = r <= 0 || (have[i] += r) == CAP;
      if (!finished) {  // complete once the whole body is in
        char *head = buf[i] + skip;
        char *end = have[i] > skip ? memmem(head, have[i] - skip, "\r\n\r\n", 4) : NULL;
        if (end && (size_t)(buf[i] + have[i] - (end + 4)) >= BODY) {
          ok += (skip == 0 || (buf[i][1] == 0 && buf[i][3] == 0)) &&
                strncmp(head, "HTTP/1.0 200", 12) == 0 &&
                (size_t)(buf[i] + have[i] - (end + 4)) == BODY;
          finished = 1;
        }
      }
      if (finished) {
        close(pfd[k].fd);
        pfd[k] = pfd[--live];
        idx[k] = idx[live];
        k--;
      }
    }
  }
  for (int k = 0; k < live; k++) close(pfd[k].fd);
  double secs = now() - t0;
  printf("ok=%d count=%d opened=%d open_secs=%.3f secs=%.3f\n", ok, count, opened, t_open,
         secs);
  free(fds), free(pfd), free(idx), free(buf), free(have);
  return ok == count ? 0 : 1;
}

static int usage(void) {
  fprintf(stderr,
          "usage: tpbench serve PORT\n"
          "       tpbench get|post HOST PORT BYTES FLOWS [-s H:P] [-w BYTES] [-t S]\n"
          "       tpbench short|many HOST PORT COUNT [-s H:P [-S]] [-t S]\n");
  return 64;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  raise_nofile();
  if (argc == 3 && strcmp(argv[1], "serve") == 0) return serve(atoi(argv[2]));
  if (argc < 5) return usage();
  const char *mode = argv[1];
  double timeout = 60;
  int pos = 0;
  char *rest[3] = {0};
  for (int i = 4; i < argc; i++) {
    if (strcmp(argv[i], "-s") == 0 && i + 1 < argc) {
      char *hp = argv[++i], *colon = strrchr(hp, ':');
      if (!colon) return usage();
      *colon = 0;
      if (parse_addr(&g.socks, hp, atoi(colon + 1))) return usage();
      g.use_socks = 1;
    } else if (strcmp(argv[i], "-S") == 0) {
      g.stepwise = 1;
    } else if (strcmp(argv[i], "-w") == 0 && i + 1 < argc) {
      g.io = strtoull(argv[++i], NULL, 10);
      if (g.io < 1 || g.io > BUF) return usage();
    } else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
      timeout = atof(argv[++i]);
    } else if (pos < 2) {
      rest[pos++] = argv[i];
    } else {
      return usage();
    }
  }
  if (parse_addr(&g.dst, argv[2], atoi(argv[3]))) return usage();
  g.deadline = now() + timeout;
  alarm((unsigned)timeout + 30);  // a hard bound even if a syscall ignores the timeouts
  if (strcmp(mode, "get") == 0 || strcmp(mode, "post") == 0) {
    if (!rest[0] || !rest[1]) return usage();
    return bulk(mode[0] == 'p', strtoull(rest[0], NULL, 10), atoi(rest[1]));
  }
  if (strcmp(mode, "short") == 0 && rest[0]) return short_conns(atoi(rest[0]));
  if (strcmp(mode, "many") == 0 && rest[0]) return many(atoi(rest[0]));
  return usage();
}
