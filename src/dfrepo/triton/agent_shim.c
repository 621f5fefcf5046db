/*
 * libtritonrepoagent_dragonfly.so -- dfrepo's Triton repository agent shim.
 *
 * This file holds no agent logic.  It forwards every repository-agent action to a
 * persistent Python helper process (`dfrepo.triton.worker`) and carries the answer
 * back to Triton as a TRITONSERVER_Error* (or nullptr).  No Python runs inside
 * tritonserver's address space; see docs/triton-agent.md for why.
 *
 * Protocol (see dfrepo/triton/_protocol.py, the Python side):
 *   control socket  AF_UNIX SOCK_SEQPACKET, the worker's end is its fd argument.
 *                   worker -> shim once: "DFREPO-WORKER 1 <pid>"   (ready)
 *                   shim -> worker: one byte 'C' + SCM_RIGHTS fd per action
 *   action channel  AF_UNIX SOCK_STREAM socketpair, one per action, frames of
 *                   4-byte big-endian length + UTF-8 JSON object:
 *                   shim -> worker  {"v":1,"action":..,"model":..,"artifact_type":..,
 *                                    "location":..,"parameters":{..},
 *                                    "deadline":<s>,"deadline_source":"..",
 *                                    "worker_deadline":<s>|absent,"config":{..}|null}
 *                   worker -> shim  {"op":"acquire"}  -> shim answers
 *                                   {"ok":true,"path":..} | {"ok":false,"code":..,"message":..}
 *                   worker -> shim  {"op":"done","ok":true,"location":null|".."}
 *                                 | {"op":"done","ok":false,"code":..,"message":..[,"retire":true]}
 *
 * Deadlines: every action has one (DFREPO_AGENT_LOAD_TIMEOUT / DFREPO_AGENT_ACTION_TIMEOUT,
 * or the agent parameters dfrepo.load_timeout / dfrepo.action_timeout).  The worker gives
 * up by itself at "worker_deadline" (a margin earlier) and answers "retire" when the
 * action's thread is still stuck; the shim then stops that worker once its other
 * actions are answered.  If the worker does not answer by the deadline, the shim kills
 * it (its process group) and returns UNAVAILABLE; other actions that were in flight on
 * it get an error that says why.  Triton holds its repository lock during a LOAD, so
 * without a deadline one stuck pull would freeze every later load, unload and shutdown.
 *
 * Built with no Triton headers: the few types and prototypes are declared below
 * (repo-agent API 0.1, tritonserver API 1.x); they resolve against libtritonserver.so
 * when Triton dlopens this library.  Only TRITONREPOAGENT_* is exported
 * (agent.ldscript).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- Triton declarations (tritonrepoagent.h 0.1, tritonserver.h) ---------------- */

typedef struct TRITONSERVER_Error TRITONSERVER_Error;
typedef struct TRITONSERVER_Message TRITONSERVER_Message;
typedef struct TRITONREPOAGENT_Agent TRITONREPOAGENT_Agent;
typedef struct TRITONREPOAGENT_AgentModel TRITONREPOAGENT_AgentModel;

typedef enum {
  TRITONREPOAGENT_ARTIFACT_FILESYSTEM = 0,
  TRITONREPOAGENT_ARTIFACT_REMOTE_FILESYSTEM = 1
} TRITONREPOAGENT_ArtifactType;

typedef enum {
  TRITONREPOAGENT_ACTION_LOAD = 0,
  TRITONREPOAGENT_ACTION_LOAD_COMPLETE = 1,
  TRITONREPOAGENT_ACTION_LOAD_FAIL = 2,
  TRITONREPOAGENT_ACTION_UNLOAD = 3,
  TRITONREPOAGENT_ACTION_UNLOAD_COMPLETE = 4
} TRITONREPOAGENT_ActionType;

typedef enum {
  TRITONSERVER_ERROR_UNKNOWN = 0,
  TRITONSERVER_ERROR_INTERNAL = 1,
  TRITONSERVER_ERROR_NOT_FOUND = 2,
  TRITONSERVER_ERROR_INVALID_ARG = 3,
  TRITONSERVER_ERROR_UNAVAILABLE = 4,
  TRITONSERVER_ERROR_UNSUPPORTED = 5,
  TRITONSERVER_ERROR_ALREADY_EXISTS = 6
} TRITONSERVER_Error_Code;

extern TRITONSERVER_Error* TRITONREPOAGENT_ApiVersion(uint32_t* major, uint32_t* minor);
extern TRITONSERVER_Error* TRITONREPOAGENT_ModelRepositoryLocation(
    TRITONREPOAGENT_Agent* agent, TRITONREPOAGENT_AgentModel* model,
    TRITONREPOAGENT_ArtifactType* artifact_type, const char** location);
extern TRITONSERVER_Error* TRITONREPOAGENT_ModelRepositoryLocationAcquire(
    TRITONREPOAGENT_Agent* agent, TRITONREPOAGENT_AgentModel* model,
    const TRITONREPOAGENT_ArtifactType artifact_type, const char** location);
extern TRITONSERVER_Error* TRITONREPOAGENT_ModelRepositoryUpdate(
    TRITONREPOAGENT_Agent* agent, TRITONREPOAGENT_AgentModel* model,
    const TRITONREPOAGENT_ArtifactType artifact_type, const char* location);
extern TRITONSERVER_Error* TRITONREPOAGENT_ModelParameterCount(
    TRITONREPOAGENT_Agent* agent, TRITONREPOAGENT_AgentModel* model, uint32_t* count);
extern TRITONSERVER_Error* TRITONREPOAGENT_ModelParameter(
    TRITONREPOAGENT_Agent* agent, TRITONREPOAGENT_AgentModel* model, const uint32_t index,
    const char** parameter_name, const char** parameter_value);
extern TRITONSERVER_Error* TRITONREPOAGENT_ModelConfig(
    TRITONREPOAGENT_Agent* agent, TRITONREPOAGENT_AgentModel* model,
    const uint32_t config_version, TRITONSERVER_Message** model_config);
extern TRITONSERVER_Error* TRITONSERVER_MessageSerializeToJson(
    TRITONSERVER_Message* message, const char** base, size_t* byte_size);
extern TRITONSERVER_Error* TRITONSERVER_MessageDelete(TRITONSERVER_Message* message);
extern TRITONSERVER_Error* TRITONSERVER_ErrorNew(TRITONSERVER_Error_Code code, const char* msg);
extern const char* TRITONSERVER_ErrorMessage(TRITONSERVER_Error* error);
extern void TRITONSERVER_ErrorDelete(TRITONSERVER_Error* error);

#define EXPORT __attribute__((visibility("default")))

/* ---- constants ------------------------------------------------------------------ */

#define PROTO_VERSION 1
#define MAX_FRAME (16u * 1024u * 1024u)
#define RECORD_NAME "dfrepo_agent.json"
#define HELLO_PREFIX "DFREPO-WORKER 1 "

/* The worker's entry point.  argv: [python, -c, BOOTSTRAP, record-path-or-"", fd
   (, "close-fds")].  "close-fds" is passed when posix_spawn could not close tritonserver's
   inherited descriptors itself (glibc < 2.34): the bootstrap closes all but 0-2 and fd. */
static const char BOOTSTRAP[] =
    "import json, os, sys\n"
    "if sys.argv[3:] == ['close-fds']:\n"
    "    del sys.argv[3:]\n"
    "    keep = {0, 1, 2, int(sys.argv[2])}\n"
    "    try:\n"
    "        fds = sorted(int(n) for n in os.listdir('/proc/self/fd'))\n"
    "    except OSError:\n"
    "        fds = range(3, 65536)\n"
    "    for fd in fds:\n"
    "        if fd not in keep:\n"
    "            try:\n"
    "                os.close(fd)\n"
    "            except OSError:\n"
    "                pass\n"
    "if sys.path and sys.path[0] == '':\n"
    "    del sys.path[0]\n"
    "if sys.argv[1]:\n"
    "    try:\n"
    "        with open(sys.argv[1], encoding='utf-8') as f:\n"
    "            paths = json.load(f).get('sys_path', [])\n"
    "        sys.path[:0] = [p for p in paths if p not in sys.path]\n"
    "        os.environ['DFREPO_AGENT_PATHS'] = os.pathsep.join(paths[1:])\n"
    "    except (OSError, ValueError) as exc:\n"
    "        print('[dfrepo-agent] ignoring unreadable %s: %s' % (sys.argv[1], exc), file=sys.stderr)\n"
    "from dfrepo.triton.worker import main\n"
    "sys.exit(main(sys.argv[2:]))\n";

static const char* ACTION_NAMES[] = {"LOAD", "LOAD_COMPLETE", "LOAD_FAIL", "UNLOAD",
                                     "UNLOAD_COMPLETE"};

/* Deadlines (seconds): LOAD pulls whole models, the other actions are bookkeeping. */
#define DEFAULT_LOAD_TIMEOUT 1800.0
#define DEFAULT_ACTION_TIMEOUT 60.0
#define LOAD_TIMEOUT_ENV "DFREPO_AGENT_LOAD_TIMEOUT"
#define ACTION_TIMEOUT_ENV "DFREPO_AGENT_ACTION_TIMEOUT"
#define LOAD_TIMEOUT_PARAM "dfrepo.load_timeout"
#define ACTION_TIMEOUT_PARAM "dfrepo.action_timeout"
/* How long a send of an action socket to the worker may block before the worker counts
   as not answering (it only blocks when the worker stopped reading its control socket). */
#define SEND_FD_TIMEOUT 10.0

/* ---- worker state (guarded by g_mu) --------------------------------------------- */

/* One worker process.  `gen` identifies it (pids can be reused, generations are not). */
typedef struct {
  pid_t pid;           /* -1 (or 0 in a never-used slot) when none */
  int ctl;             /* our end of its control socket */
  unsigned long gen;
  int inflight;        /* actions handed to it and not yet answered */
} worker_t;

#define MAX_RETIRED 4
#define MAX_UNREAPED 16
#define MAX_STOPS 8

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
/* The worker new actions go to. */
static worker_t g_cur = {-1, -1, 0, 0};
/* Workers that gave up on a stuck action: no new actions; stopped when their last one
   is answered (or its deadline passes). */
static worker_t g_retired[MAX_RETIRED];
static unsigned long g_gen;
/* Workers we SIGKILLed that had not exited 5 s later (stuck in the kernel): reaped later. */
static pid_t g_unreaped[MAX_UNREAPED];
/* Why we stopped a worker: told to the actions that were in flight on it. */
static struct {
  unsigned long gen;
  char why[640];
} g_stops[MAX_STOPS];
static unsigned g_stops_next;

static void logmsg(const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  fprintf(stderr, "[dfrepo-agent] %s\n", buf);
  fflush(stderr);
}

/* ---- growable buffer + JSON writing --------------------------------------------- */

typedef struct {
  char* p;
  size_t n, cap;
  int oom;
} buf_t;

static void buf_put(buf_t* b, const char* s, size_t n) {
  if (b->oom) return;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n + 1) cap *= 2;
    char* q = realloc(b->p, cap);
    if (!q) { b->oom = 1; return; }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->n, s, n);
  b->n += n;
  b->p[b->n] = 0;
}

static void buf_puts(buf_t* b, const char* s) { buf_put(b, s, strlen(s)); }

static void buf_json_str(buf_t* b, const char* s) {
  buf_put(b, "\"", 1);
  for (const unsigned char* c = (const unsigned char*)s; *c; c++) {
    char esc[8];
    if (*c == '"' || *c == '\\') {
      esc[0] = '\\'; esc[1] = (char)*c;
      buf_put(b, esc, 2);
    } else if (*c < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", *c);
      buf_put(b, esc, 6);
    } else {
      buf_put(b, (const char*)c, 1);
    }
  }
  buf_put(b, "\"", 1);
}

/* ---- minimal JSON reading: one flat object, string/bool values we care about ------ */

typedef struct {
  char* op;
  char* path;
  char* location;
  char* code;
  char* message;
  char* python;
  int ok;     /* -1 unknown, 0 false, 1 true */
  int retire; /* the worker asks to be replaced (an action of it is stuck) */
} reply_t;

static void reply_free(reply_t* r) {
  free(r->op); free(r->path); free(r->location); free(r->code); free(r->message);
  free(r->python);
  memset(r, 0, sizeof *r);
  r->ok = -1;
}

static const char* skip_ws(const char* s, const char* e) {
  while (s < e && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) s++;
  return s;
}

static void utf8_put(buf_t* b, uint32_t cp) {
  char o[4];
  if (cp < 0x80) { o[0] = (char)cp; buf_put(b, o, 1); }
  else if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F)); buf_put(b, o, 2); }
  else if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F)); buf_put(b, o, 3);
  } else {
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F)); buf_put(b, o, 4);
  }
}

static int hex4(const char* s, const char* e, uint32_t* out) {
  if (e - s < 4) return -1;
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    char c = s[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

/* Parse a JSON string at *s (pointing at the quote). out may be NULL (skip). */
static const char* parse_str(const char* s, const char* e, char** out) {
  buf_t b = {0};
  if (s >= e || *s != '"') return NULL;
  s++;
  while (s < e && *s != '"') {
    if (*s == '\\') {
      if (++s >= e) goto bad;
      char c = *s++;
      switch (c) {
        case '"': case '\\': case '/': buf_put(&b, &c, 1); break;
        case 'b': buf_puts(&b, "\b"); break;
        case 'f': buf_puts(&b, "\f"); break;
        case 'n': buf_puts(&b, "\n"); break;
        case 'r': buf_puts(&b, "\r"); break;
        case 't': buf_puts(&b, "\t"); break;
        case 'u': {
          uint32_t cp, lo;
          if (hex4(s, e, &cp)) goto bad;
          s += 4;
          if (cp >= 0xD800 && cp < 0xDC00 && e - s >= 6 && s[0] == '\\' && s[1] == 'u' &&
              !hex4(s + 2, e, &lo) && lo >= 0xDC00 && lo < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            s += 6;
          }
          if (cp == 0) cp = '?'; /* no NULs inside C strings */
          utf8_put(&b, cp);
          break;
        }
        default: goto bad;
      }
    } else {
      buf_put(&b, s, 1);
      s++;
    }
  }
  if (s >= e || b.oom) goto bad;
  if (out) *out = b.p ? b.p : strdup(""); else free(b.p);
  return s + 1;
bad:
  free(b.p);
  return NULL;
}

/* Skip any JSON value (objects/arrays by bracket matching, strings respected). */
static const char* skip_value(const char* s, const char* e) {
  s = skip_ws(s, e);
  if (s >= e) return NULL;
  if (*s == '"') return parse_str(s, e, NULL);
  if (*s == '{' || *s == '[') {
    int depth = 0;
    while (s < e) {
      if (*s == '"') { s = parse_str(s, e, NULL); if (!s) return NULL; continue; }
      if (*s == '{' || *s == '[') depth++;
      else if (*s == '}' || *s == ']') { if (--depth == 0) return s + 1; }
      s++;
    }
    return NULL;
  }
  while (s < e && *s != ',' && *s != '}' && *s != ']' && *s != ' ' && *s != '\n') s++;
  return s;
}

static int parse_reply(const char* s, size_t n, reply_t* r) {
  const char* e = s + n;
  memset(r, 0, sizeof *r);
  r->ok = -1;
  s = skip_ws(s, e);
  if (s >= e || *s != '{') return -1;
  s = skip_ws(s + 1, e);
  if (s < e && *s == '}') return 0;
  for (;;) {
    char* key = NULL;
    s = parse_str(skip_ws(s, e), e, &key);
    if (!s) return -1;
    s = skip_ws(s, e);
    if (s >= e || *s != ':') { free(key); return -1; }
    s = skip_ws(s + 1, e);
    char** slot = NULL;
    if (!strcmp(key, "op")) slot = &r->op;
    else if (!strcmp(key, "path")) slot = &r->path;
    else if (!strcmp(key, "location")) slot = &r->location;
    else if (!strcmp(key, "code")) slot = &r->code;
    else if (!strcmp(key, "message")) slot = &r->message;
    else if (!strcmp(key, "python")) slot = &r->python;
    if (slot && s < e && *s == '"') {
      free(*slot);
      *slot = NULL;
      s = parse_str(s, e, slot);
    } else if (!strcmp(key, "ok") && e - s >= 4 && !strncmp(s, "true", 4)) {
      r->ok = 1; s += 4;
    } else if (!strcmp(key, "ok") && e - s >= 5 && !strncmp(s, "false", 5)) {
      r->ok = 0; s += 5;
    } else if (!strcmp(key, "retire") && e - s >= 4 && !strncmp(s, "true", 4)) {
      r->retire = 1; s += 4;
    } else {
      s = skip_value(s, e);
    }
    free(key);
    if (!s) return -1;
    s = skip_ws(s, e);
    if (s < e && *s == ',') { s++; continue; }
    if (s < e && *s == '}') return 0;
    return -1;
  }
}

/* The top-level string member `want` of a JSON object (malloc'd), or NULL. */
static char* json_get_str(const char* s, size_t n, const char* want) {
  const char* e = s + n;
  s = skip_ws(s, e);
  if (s >= e || *s != '{') return NULL;
  s = skip_ws(s + 1, e);
  if (s < e && *s == '}') return NULL;
  for (;;) {
    char* key = NULL;
    s = parse_str(skip_ws(s, e), e, &key);
    if (!s) return NULL;
    s = skip_ws(s, e);
    if (s >= e || *s != ':') { free(key); return NULL; }
    s = skip_ws(s + 1, e);
    if (!strcmp(key, want) && s < e && *s == '"') {
      char* out = NULL;
      free(key);
      return parse_str(s, e, &out) ? out : NULL;
    }
    free(key);
    s = skip_value(s, e);
    if (!s) return NULL;
    s = skip_ws(s, e);
    if (s < e && *s == ',') { s++; continue; }
    return NULL;
  }
}

/* ---- framing -------------------------------------------------------------------- */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* I/O results: done, the peer is gone (EOF, reset, garbage), or the deadline passed. */
enum { IO_OK = 0, IO_BROKEN = -1, IO_TIMEOUT = -2 };

/* Wait until `fd` is ready for `events` or the absolute (CLOCK_MONOTONIC) deadline. */
static int wait_fd(int fd, short events, double deadline) {
  for (;;) {
    double left = deadline - now_s();
    if (left <= 0) return IO_TIMEOUT;
    int ms = left > 60.0 ? 60000 : (int)(left * 1000.0) + 1;
    struct pollfd p = {fd, events, 0};
    int r = poll(&p, 1, ms);
    if (r < 0 && errno != EINTR) return IO_BROKEN;
    if (r > 0) return IO_OK; /* POLLHUP/POLLERR too: the recv/send reports them */
  }
}

static int write_all(int fd, const char* p, size_t n, double deadline) {
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return IO_BROKEN;
      int rc = wait_fd(fd, POLLOUT, deadline);
      if (rc) return rc;
      continue;
    }
    p += w;
    n -= (size_t)w;
  }
  return IO_OK;
}

static int read_all(int fd, char* p, size_t n, double deadline) {
  while (n) {
    ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
    if (r == 0) return IO_BROKEN; /* EOF */
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return IO_BROKEN;
      int rc = wait_fd(fd, POLLIN, deadline);
      if (rc) return rc;
      continue;
    }
    p += r;
    n -= (size_t)r;
  }
  return IO_OK;
}

static int write_frame(int fd, const char* body, size_t n, double deadline) {
  unsigned char h[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                        (unsigned char)(n >> 8), (unsigned char)n};
  int rc = write_all(fd, (const char*)h, 4, deadline);
  return rc ? rc : write_all(fd, body, n, deadline);
}

/* Returns a malloc'd body (NUL-terminated), or NULL with *rc = IO_BROKEN/IO_TIMEOUT. */
static char* read_frame(int fd, size_t* len, double deadline, int* rc) {
  unsigned char h[4];
  *rc = read_all(fd, (char*)h, 4, deadline);
  if (*rc) return NULL;
  size_t n = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
  *rc = IO_BROKEN;
  if (n > MAX_FRAME) return NULL;
  char* body = malloc(n + 1);
  if (!body) return NULL;
  *rc = read_all(fd, body, n, deadline);
  if (*rc) { free(body); return NULL; }
  body[n] = 0;
  *len = n;
  return body;
}

/* ---- worker process management --------------------------------------------------- */

static char* read_file(const char* path, size_t* len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  buf_t b = {0};
  char tmp[4096];
  for (;;) {
    ssize_t r = read(fd, tmp, sizeof tmp);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    buf_put(&b, tmp, (size_t)r);
  }
  close(fd);
  if (b.oom) { free(b.p); return NULL; }
  *len = b.n;
  return b.p ? b.p : strdup("");
}

/* Path of the install record: <dir of this .so>/dfrepo_agent.json, or "" if unknown. */
static void record_path(char* out, size_t outlen) {
  Dl_info info;
  out[0] = 0;
  if (dladdr((void*)&record_path, &info) && info.dli_fname && info.dli_fname[0] == '/') {
    const char* slash = strrchr(info.dli_fname, '/');
    size_t dlen = (size_t)(slash - info.dli_fname);
    if (dlen + sizeof(RECORD_NAME) + 2 <= outlen) {
      memcpy(out, info.dli_fname, dlen);
      out[dlen] = '/';
      memcpy(out + dlen + 1, RECORD_NAME, sizeof(RECORD_NAME));
    }
  }
}

/* Try to reap the workers we killed earlier that were still around. Caller holds g_mu. */
static void sweep_unreaped_locked(void) {
  for (int i = 0; i < MAX_UNREAPED; i++) {
    if (g_unreaped[i] <= 0) continue;
    int st;
    pid_t r = waitpid(g_unreaped[i], &st, WNOHANG);
    if (r == g_unreaped[i] || (r < 0 && errno == ECHILD)) g_unreaped[i] = 0;
  }
}

/* Reap worker `pid` (our child, leader of its own process group): wait up to `grace`
   seconds for it to exit by itself (it does on EOF of its control socket), then SIGKILL
   its process group and wait up to 5 s more.  One that is still there (stuck in the
   kernel) is remembered and reaped later: never an unbounded wait.  Caller holds g_mu. */
static void reap_worker_locked(pid_t pid, double grace) {
  double until = now_s() + grace;
  int killed = 0;
  for (;;) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return; /* not our child any more (someone else reaped it) */
    if (now_s() >= until) {
      if (killed) {
        logmsg("the Python worker (pid %d) did not exit 5 s after SIGKILL; reaping it later",
               (int)pid);
        sweep_unreaped_locked();
        for (int i = 0; i < MAX_UNREAPED; i++)
          if (g_unreaped[i] <= 0) { g_unreaped[i] = pid; break; }
        return;
      }
      /* Unreaped, so the group id is still ours; its children (an agent's subprocesses)
         go with it. */
      kill(-pid, SIGKILL);
      kill(pid, SIGKILL);
      killed = 1;
      until = now_s() + 5.0;
    }
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

/* Close its control socket (it exits on EOF), reap it (SIGKILL after `grace`) and clear
   the slot.  Caller holds g_mu. */
static void stop_worker_locked(worker_t* w, double grace) {
  if (w->ctl >= 0) { close(w->ctl); w->ctl = -1; }
  if (w->pid > 0) reap_worker_locked(w->pid, grace);
  w->pid = -1;
  w->inflight = 0;
}

/* Remember why worker `gen` is being stopped, for the actions that lose their channel. */
static void note_stop_locked(unsigned long gen, const char* fmt, ...) {
  unsigned i = g_stops_next++ % MAX_STOPS;
  g_stops[i].gen = gen;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_stops[i].why, sizeof g_stops[i].why, fmt, ap);
  va_end(ap);
}

/* Copy the reason worker `gen` was stopped into out; 0 if there is one. */
static int stop_reason(unsigned long gen, char* out, size_t n) {
  int found = -1;
  pthread_mutex_lock(&g_mu);
  for (int i = 0; i < MAX_STOPS; i++) {
    if (g_stops[i].gen == gen && g_stops[i].why[0]) {
      snprintf(out, n, "%s", g_stops[i].why);
      found = 0;
    }
  }
  pthread_mutex_unlock(&g_mu);
  return found;
}

static worker_t* find_worker_locked(unsigned long gen) {
  if (g_cur.pid > 0 && g_cur.gen == gen) return &g_cur;
  for (int i = 0; i < MAX_RETIRED; i++)
    if (g_retired[i].pid > 0 && g_retired[i].gen == gen) return &g_retired[i];
  return NULL;
}

static void describe_status(int st, char* out, size_t n) {
  if (WIFEXITED(st)) snprintf(out, n, "exit status %d", WEXITSTATUS(st));
  else if (WIFSIGNALED(st)) snprintf(out, n, "signal %d", WTERMSIG(st));
  else snprintf(out, n, "status %d", st);
}

/* glibc >= 2.34; looked up at run time so the shim still loads with an older glibc. */
typedef int (*addclosefrom_fn)(posix_spawn_file_actions_t*, int);

/* Spawn the worker with stdin=/dev/null, the control socket on `target`, and (with
   glibc's posix_spawn_file_actions_addclosefrom_np: close_range(2), else a walk over
   /proc/self/fd, in the child) no other descriptor of tritonserver's above 2.
   If not, argv[5] becomes "close-fds" and the bootstrap closes them itself. */
static int spawn_worker(pid_t* pid, const char* python, char* argv[], int ctl_fd, int target) {
  static addclosefrom_fn addclosefrom;
  static int looked_up;
  if (!__atomic_load_n(&looked_up, __ATOMIC_ACQUIRE)) {
    addclosefrom = (addclosefrom_fn)dlsym(RTLD_DEFAULT, "posix_spawn_file_actions_addclosefrom_np");
    __atomic_store_n(&looked_up, 1, __ATOMIC_RELEASE);
  }
  extern char** environ;
  int rc = 0;
  for (int with_closefrom = addclosefrom != NULL; with_closefrom >= 0; with_closefrom--) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    argv[5] = with_closefrom ? NULL : "close-fds";
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, ctl_fd, target);
    /* Below target there is only fd 3 when target is 4: ctl_fd itself, CLOEXEC. */
    if (with_closefrom) addclosefrom(&fa, target + 1);
    posix_spawnattr_init(&at);
    sigset_t none, defs;
    sigemptyset(&none);
    sigemptyset(&defs);
    sigaddset(&defs, SIGINT); sigaddset(&defs, SIGTERM); sigaddset(&defs, SIGPIPE);
    sigaddset(&defs, SIGCHLD); sigaddset(&defs, SIGHUP);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &defs);
    /* Own process group: a Ctrl-C aimed at tritonserver does not kill the worker in the
       middle of an UNLOAD; it exits when the control socket closes instead.  It also lets
       a deadline kill the worker together with anything it started. */
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                      POSIX_SPAWN_SETPGROUP);
    rc = strchr(python, '/') ? posix_spawn(pid, python, &fa, &at, argv, environ)
                             : posix_spawnp(pid, python, &fa, &at, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc == 0) return 0;
    /* closefrom can fail on its own (no close_range and no /proc): retry without it. */
    if (!with_closefrom || rc == ENOENT || rc == EACCES) break;
  }
  return rc;
}

/* Start the worker and wait for its hello. Caller holds g_mu. 0 on success. */
static int start_worker_locked(char* err, size_t errlen) {
  char rec[4096];
  char python[4096];
  record_path(rec, sizeof rec);
  const char* env_py = getenv("DFREPO_PYTHON");
  struct stat sb;
  int have_rec = rec[0] && stat(rec, &sb) == 0;
  snprintf(python, sizeof python, "%s", "python3");
  if (env_py && env_py[0]) {
    snprintf(python, sizeof python, "%s", env_py);
  } else if (have_rec) {
    size_t n;
    char* txt = read_file(rec, &n);
    reply_t r;
    if (txt && parse_reply(txt, n, &r) == 0 && r.python && r.python[0])
      snprintf(python, sizeof python, "%s", r.python);
    else
      logmsg("cannot read \"python\" from %s; using python3 from PATH", rec);
    if (txt) reply_free(&r);
    free(txt);
  }

  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv)) {
    snprintf(err, errlen, "dfrepo agent: socketpair failed: %s", strerror(errno));
    return -1;
  }
  int target = sv[1] == 3 ? 4 : 3;
  char fdarg[16];
  snprintf(fdarg, sizeof fdarg, "%d", target);
  char* argv[] = {python, "-c", (char*)BOOTSTRAP, have_rec ? rec : "", fdarg, NULL, NULL};
  pid_t pid;
  int rc = spawn_worker(&pid, python, argv, sv[1], target);
  close(sv[1]);
  if (rc != 0) {
    close(sv[0]);
    snprintf(err, errlen,
             "dfrepo agent: cannot start the Python worker '%.1024s': %s (set DFREPO_PYTHON or rerun "
             "'dfrepo install-agent')", python, strerror(rc));
    return -1;
  }
  g_cur.pid = pid;
  g_cur.ctl = sv[0];
  g_cur.gen = ++g_gen;
  g_cur.inflight = 0;

  const char* tmo = getenv("DFREPO_AGENT_START_TIMEOUT");
  double timeout = tmo && atof(tmo) > 0 ? atof(tmo) : 60.0;
  double deadline = now_s() + timeout;
  char hello[128];
  for (;;) {
    struct pollfd p = {g_cur.ctl, POLLIN, 0};
    int left = (int)((deadline - now_s()) * 1000);
    if (left <= 0) {
      snprintf(err, errlen, "dfrepo agent: the Python worker '%.1024s' (pid %d) did not become ready "
               "within %.0f s", python, (int)pid, timeout);
      stop_worker_locked(&g_cur, 0);
      return -1;
    }
    int pr = poll(&p, 1, left);
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    ssize_t n = recv(g_cur.ctl, hello, sizeof hello - 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) {
      hello[n] = 0;
      if (strncmp(hello, HELLO_PREFIX, strlen(HELLO_PREFIX)) == 0) return 0;
      snprintf(err, errlen, "dfrepo agent: the Python worker '%.1024s' speaks another protocol "
               "(\"%.40s\"); reinstall the agent with 'dfrepo install-agent'", python, hello);
      stop_worker_locked(&g_cur, 0);
      return -1;
    }
    /* EOF: it died during start-up (its traceback is on stderr). */
    int st = 0;
    close(g_cur.ctl); g_cur.ctl = -1;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    g_cur.pid = -1;
    char how[64];
    describe_status(st, how, sizeof how);
    snprintf(err, errlen, "dfrepo agent: the Python worker '%.1024s' exited (%s) before it was ready; "
             "its error is in the server log above. Is dfrepo installed for that interpreter? "
             "Set DFREPO_PYTHON or rerun 'dfrepo install-agent'", python, how);
    return -1;
  }
}

/* Is the current worker still running? Reaps it if not. Caller holds g_mu. */
static int worker_alive_locked(void) {
  if (g_cur.pid <= 0) return 0;
  int st;
  pid_t r = waitpid(g_cur.pid, &st, WNOHANG);
  if (r == 0) return 1;
  if (r == g_cur.pid) {
    char how[64];
    describe_status(st, how, sizeof how);
    logmsg("the Python worker (pid %d) died (%s); starting a new one", (int)g_cur.pid, how);
  }
  if (g_cur.ctl >= 0) { close(g_cur.ctl); g_cur.ctl = -1; }
  g_cur.pid = -1;
  g_cur.inflight = 0;
  return 0;
}

/* Hand an action socket to the worker; bounded: a worker that stopped reading its
   control socket is not waited for. */
static int send_fd(int sock, int fd) {
  char byte = 'C';
  struct iovec iov = {&byte, 1};
  union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } u;
  memset(&u, 0, sizeof u);
  struct msghdr msg = {0};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = u.buf;
  msg.msg_controllen = sizeof u.buf;
  struct cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(c), &fd, sizeof(int));
  double deadline = now_s() + SEND_FD_TIMEOUT;
  for (;;) {
    ssize_t r = sendmsg(sock, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r == 1) return 0;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      int rc = wait_fd(sock, POLLOUT, deadline);
      if (rc == IO_TIMEOUT) errno = ETIMEDOUT;
      if (rc) return -1;
      continue;
    }
    return -1;
  }
}

/* Open a fresh action channel to a live worker (starting/restarting it as needed).
   Returns our end of the channel, or -1 with err set.  *gen_out and *pid_out identify the
   worker; the action counts as in flight on it until finish_action(). */
static int open_channel(char* err, size_t errlen, unsigned long* gen_out, pid_t* pid_out) {
  pthread_mutex_lock(&g_mu);
  sweep_unreaped_locked();
  int result = -1;
  for (int attempt = 0; attempt < 2 && result < 0; attempt++) {
    if (!worker_alive_locked() && start_worker_locked(err, errlen)) break;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
      snprintf(err, errlen, "dfrepo agent: socketpair failed: %s", strerror(errno));
      break;
    }
    if (send_fd(g_cur.ctl, sv[1]) == 0) {
      close(sv[1]);
      result = sv[0];
      *gen_out = g_cur.gen;
      *pid_out = g_cur.pid;
      g_cur.inflight++;
    } else {
      int e = errno;
      close(sv[0]);
      close(sv[1]);
      logmsg("the Python worker (pid %d) is not answering (%s); restarting it", (int)g_cur.pid,
             strerror(e));
      note_stop_locked(g_cur.gen, "the Python worker (pid %d) stopped taking new actions (%s) and "
                       "was restarted", (int)g_cur.pid, strerror(e));
      stop_worker_locked(&g_cur, 1.0);
      snprintf(err, errlen, "dfrepo agent: cannot reach the Python worker: %s", strerror(e));
    }
  }
  pthread_mutex_unlock(&g_mu);
  return result;
}

/* Move the current worker to the retired list (no new actions go to it). Caller holds g_mu. */
static worker_t* retire_current_locked(void) {
  int slot = -1;
  for (int i = 0; i < MAX_RETIRED && slot < 0; i++)
    if (g_retired[i].pid <= 0) slot = i;
  if (slot < 0) { /* full: stop the oldest now */
    slot = 0;
    for (int i = 1; i < MAX_RETIRED; i++)
      if (g_retired[i].gen < g_retired[slot].gen) slot = i;
    note_stop_locked(g_retired[slot].gen, "the Python worker (pid %d) had a stuck action and too "
                     "many workers were waiting to be stopped", (int)g_retired[slot].pid);
    stop_worker_locked(&g_retired[slot], 0);
  }
  g_retired[slot] = g_cur;
  g_cur.pid = -1;
  g_cur.ctl = -1;
  g_cur.inflight = 0;
  return &g_retired[slot];
}

enum { FINISH_OK, FINISH_BROKEN, FINISH_RETIRE };

/* An action on worker `gen` ended.  BROKEN: its channel broke, so the worker is replaced
   (its other in-flight actions learn `why`).  RETIRE: the worker gave up on a stuck
   action; it takes no new actions and is stopped once its in-flight ones are answered. */
static void finish_action(unsigned long gen, int how, const char* why) {
  pthread_mutex_lock(&g_mu);
  worker_t* w = find_worker_locked(gen);
  if (w) {
    if (w->inflight > 0) w->inflight--;
    if (how == FINISH_BROKEN) {
      if (w->inflight > 0) note_stop_locked(gen, "%s", why);
      stop_worker_locked(w, 2.0);
    } else {
      if (how == FINISH_RETIRE && w == &g_cur) {
        w = retire_current_locked();
        if (w->inflight > 0)
          logmsg("the Python worker (pid %d) is replaced (%s); it is stopped when its %d other "
                 "action(s) are answered", (int)w->pid, why, w->inflight);
      }
      if (w != &g_cur && w->inflight == 0) stop_worker_locked(w, 2.0);
    }
  }
  pthread_mutex_unlock(&g_mu);
}

/* An action on worker `gen` passed its deadline: kill the worker now. */
static void expire_action(unsigned long gen, const char* why) {
  pthread_mutex_lock(&g_mu);
  note_stop_locked(gen, "%s", why);
  worker_t* w = find_worker_locked(gen);
  if (w) {
    logmsg("%s: killing the Python worker (pid %d)", why, (int)w->pid);
    stop_worker_locked(w, 0);
  }
  pthread_mutex_unlock(&g_mu);
}

/* ---- actions ------------------------------------------------------------------- */

static TRITONSERVER_Error_Code code_from_name(const char* name) {
  if (!name) return TRITONSERVER_ERROR_INTERNAL;
  if (!strcmp(name, "NOT_FOUND")) return TRITONSERVER_ERROR_NOT_FOUND;
  if (!strcmp(name, "INVALID_ARG")) return TRITONSERVER_ERROR_INVALID_ARG;
  if (!strcmp(name, "UNAVAILABLE")) return TRITONSERVER_ERROR_UNAVAILABLE;
  if (!strcmp(name, "UNSUPPORTED")) return TRITONSERVER_ERROR_UNSUPPORTED;
  if (!strcmp(name, "ALREADY_EXISTS")) return TRITONSERVER_ERROR_ALREADY_EXISTS;
  if (!strcmp(name, "UNKNOWN")) return TRITONSERVER_ERROR_UNKNOWN;
  return TRITONSERVER_ERROR_INTERNAL;
}

static TRITONSERVER_Error* errorf(TRITONSERVER_Error_Code code, const char* fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return TRITONSERVER_ErrorNew(code, buf);
}

/* A number of seconds > 0 (and sane); -1 if `s` is anything else. */
static int parse_seconds(const char* s, double* out) {
  if (!s) return -1;
  char* end = NULL;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s) return -1;
  while (*end == ' ' || *end == '\t') end++;
  if (*end || !(v > 0) || v > 1e8) return -1; /* !(v > 0) also refuses NaN */
  *out = v;
  return 0;
}

/* What one action is about, for the request and for messages. */
typedef struct {
  char* location;
  char* model;       /* the config's name, else the location's last component */
  double deadline;   /* seconds */
  char source[128];  /* where the deadline comes from */
} action_info_t;

static void info_free(action_info_t* info) {
  free(info->location);
  free(info->model);
  info->location = info->model = NULL;
}

/* The deadline from the environment (or the default) for `action`. */
static void env_deadline(TRITONREPOAGENT_ActionType action, action_info_t* info) {
  static int warned[2];
  int load = action == TRITONREPOAGENT_ACTION_LOAD;
  const char* name = load ? LOAD_TIMEOUT_ENV : ACTION_TIMEOUT_ENV;
  double def = load ? DEFAULT_LOAD_TIMEOUT : DEFAULT_ACTION_TIMEOUT;
  const char* v = getenv(name);
  if (v && v[0]) {
    if (parse_seconds(v, &info->deadline) == 0) {
      snprintf(info->source, sizeof info->source, "set by %s", name);
      return;
    }
    if (!__atomic_exchange_n(&warned[load], 1, __ATOMIC_RELAXED))
      logmsg("ignoring %s=\"%.64s\": not a number of seconds > 0; using %g s", name, v, def);
  }
  info->deadline = def;
  snprintf(info->source, sizeof info->source, "the default; set %s or the agent parameter %s",
           name, load ? LOAD_TIMEOUT_PARAM : ACTION_TIMEOUT_PARAM);
}

/* The last path component of a location (no query), for messages. */
static char* location_name(const char* location) {
  size_t n = strcspn(location, "?#");
  while (n > 1 && location[n - 1] == '/') n--;
  size_t b = n;
  while (b > 0 && location[b - 1] != '/') b--;
  return strndup(location + b, n - b);
}

/* Build the request frame for one action. Returns 0 or a Triton error. */
static TRITONSERVER_Error* build_request(TRITONREPOAGENT_Agent* agent,
                                         TRITONREPOAGENT_AgentModel* model,
                                         TRITONREPOAGENT_ActionType action, buf_t* b,
                                         action_info_t* info) {
  TRITONREPOAGENT_ArtifactType type = TRITONREPOAGENT_ARTIFACT_FILESYSTEM;
  const char* location = NULL;
  TRITONSERVER_Error* e = TRITONREPOAGENT_ModelRepositoryLocation(agent, model, &type, &location);
  if (e) return e;
  info->location = strdup(location ? location : "");

  /* The config (informational: never fail on it), for the model's name. */
  TRITONSERVER_Message* msg = NULL;
  e = TRITONREPOAGENT_ModelConfig(agent, model, 1, &msg);
  const char* base = NULL;
  size_t size = 0;
  if (!e && msg) e = TRITONSERVER_MessageSerializeToJson(msg, &base, &size);
  if (e) { TRITONSERVER_ErrorDelete(e); base = NULL; size = 0; }
  if (base && size) info->model = json_get_str(base, size, "name");
  if (!info->model || !info->model[0]) {
    free(info->model);
    info->model = location_name(info->location ? info->location : "");
  }
  env_deadline(action, info);
  if (!info->location || !info->model) {
    e = errorf(TRITONSERVER_ERROR_INTERNAL, "dfrepo agent: out of memory");
    goto out;
  }

  char key[64];
  snprintf(key, sizeof key, "%p", (void*)model);
  buf_puts(b, "{\"v\":1,\"action\":");
  buf_json_str(b, ACTION_NAMES[action]);
  buf_puts(b, ",\"model\":");
  buf_json_str(b, key);
  buf_puts(b, ",\"artifact_type\":");
  buf_json_str(b, type == TRITONREPOAGENT_ARTIFACT_REMOTE_FILESYSTEM ? "REMOTE_FILESYSTEM"
                                                                      : "FILESYSTEM");
  buf_puts(b, ",\"location\":");
  buf_json_str(b, location ? location : "");

  buf_puts(b, ",\"parameters\":{");
  uint32_t count = 0;
  e = TRITONREPOAGENT_ModelParameterCount(agent, model, &count);
  if (e) goto out;
  for (uint32_t i = 0; i < count; i++) {
    const char *k = NULL, *v = NULL;
    e = TRITONREPOAGENT_ModelParameter(agent, model, i, &k, &v);
    if (e) goto out;
    if (i) buf_puts(b, ",");
    buf_json_str(b, k ? k : "");
    buf_puts(b, ":");
    buf_json_str(b, v ? v : "");
    int is_load = k && !strcmp(k, LOAD_TIMEOUT_PARAM);
    if (is_load || (k && !strcmp(k, ACTION_TIMEOUT_PARAM))) {
      /* Both are checked on every action, so a typo fails the LOAD, not a later UNLOAD. */
      double secs;
      if (parse_seconds(v, &secs)) {
        e = errorf(TRITONSERVER_ERROR_INVALID_ARG,
                   "dfrepo agent: the agent parameter %s of model '%s' must be a number of "
                   "seconds > 0, got \"%.64s\"", k, info->model, v ? v : "");
        goto out;
      }
      if (is_load == (action == TRITONREPOAGENT_ACTION_LOAD)) {
        info->deadline = secs;
        snprintf(info->source, sizeof info->source, "set by the agent parameter %s", k);
      }
    }
  }
  /* The worker gives up by itself a margin before the shim would kill it, so it can say
     why and clean up; the margin is 10% of the deadline, at least 1 s, at most 30 s. */
  double margin = info->deadline * 0.1;
  if (margin < 1.0) margin = 1.0;
  if (margin > 30.0) margin = 30.0;
  char num[64];
  snprintf(num, sizeof num, "%.3f", info->deadline);
  buf_puts(b, "},\"deadline\":");
  buf_puts(b, num);
  buf_puts(b, ",\"deadline_source\":");
  buf_json_str(b, info->source);
  if (info->deadline - margin >= 0.5) {
    snprintf(num, sizeof num, "%.3f", info->deadline - margin);
    buf_puts(b, ",\"worker_deadline\":");
    buf_puts(b, num);
  }
  buf_puts(b, ",\"config\":");
  if (base && size) buf_put(b, base, size);
  else buf_puts(b, "null");
  buf_puts(b, "}");
  if (b->oom) e = errorf(TRITONSERVER_ERROR_INTERNAL, "dfrepo agent: out of memory");
out:
  if (msg) {
    TRITONSERVER_Error* de = TRITONSERVER_MessageDelete(msg);
    if (de) TRITONSERVER_ErrorDelete(de);
  }
  return e;
}

static int send_json_reply(int ch, int ok, const char* path, TRITONSERVER_Error_Code code,
                           const char* message, double deadline) {
  buf_t b = {0};
  if (ok) {
    buf_puts(&b, "{\"ok\":true,\"path\":");
    buf_json_str(&b, path ? path : "");
    buf_puts(&b, "}");
  } else {
    static const char* names[] = {"UNKNOWN", "INTERNAL", "NOT_FOUND", "INVALID_ARG",
                                  "UNAVAILABLE", "UNSUPPORTED", "ALREADY_EXISTS"};
    buf_puts(&b, "{\"ok\":false,\"code\":");
    buf_json_str(&b, (unsigned)code < 7 ? names[code] : "INTERNAL");
    buf_puts(&b, ",\"message\":");
    buf_json_str(&b, message ? message : "");
    buf_puts(&b, "}");
  }
  int rc = b.oom ? IO_BROKEN : write_frame(ch, b.p, b.n, deadline);
  free(b.p);
  return rc;
}

static TRITONSERVER_Error* run_action(TRITONREPOAGENT_Agent* agent,
                                      TRITONREPOAGENT_AgentModel* model,
                                      TRITONREPOAGENT_ActionType action) {
  if ((unsigned)action > TRITONREPOAGENT_ACTION_UNLOAD_COMPLETE)
    return errorf(TRITONSERVER_ERROR_INVALID_ARG, "dfrepo agent: unknown action %d", (int)action);
  const char* aname = ACTION_NAMES[action];
  buf_t req = {0};
  action_info_t info;
  memset(&info, 0, sizeof info);
  TRITONSERVER_Error* result = build_request(agent, model, action, &req, &info);
  if (result) { free(req.p); info_free(&info); return result; }

  char err[2048];
  pid_t pid = -1;
  unsigned long gen = 0;
  int ch = open_channel(err, sizeof err, &gen, &pid);
  if (ch < 0) {
    free(req.p); info_free(&info);
    return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_UNAVAILABLE, err);
  }
  /* From here on everything the worker does for this action is bounded by the deadline. */
  double deadline = now_s() + info.deadline;
  int io = write_frame(ch, req.p, req.n, deadline);
  int retire = 0;
  free(req.p);
  while (io == IO_OK) {
    size_t n = 0;
    char* body = read_frame(ch, &n, deadline, &io);
    if (!body) break;
    reply_t r;
    if (parse_reply(body, n, &r) || !r.op) {
      free(body);
      reply_free(&r);
      result = errorf(TRITONSERVER_ERROR_INTERNAL,
                      "dfrepo agent: malformed message from the Python worker during %s of %s",
                      aname, info.location);
      break;
    }
    free(body);
    if (!strcmp(r.op, "acquire")) {
      const char* dir = NULL;
      TRITONSERVER_Error* e = TRITONREPOAGENT_ModelRepositoryLocationAcquire(
          agent, model, TRITONREPOAGENT_ARTIFACT_FILESYSTEM, &dir);
      io = e ? send_json_reply(ch, 0, NULL, TRITONSERVER_ERROR_INTERNAL,
                               TRITONSERVER_ErrorMessage(e), deadline)
             : send_json_reply(ch, 1, dir, 0, NULL, deadline);
      if (e) TRITONSERVER_ErrorDelete(e);
      reply_free(&r);
      continue;
    }
    if (!strcmp(r.op, "done")) {
      retire = r.retire;
      if (r.ok == 1) {
        if (r.location && r.location[0]) {
          if (action == TRITONREPOAGENT_ACTION_LOAD) {
            result = TRITONREPOAGENT_ModelRepositoryUpdate(
                agent, model, TRITONREPOAGENT_ARTIFACT_FILESYSTEM, r.location);
          } else {
            logmsg("ignoring a new location returned by %s (only LOAD may relocate)", aname);
          }
        }
      } else {
        result = TRITONSERVER_ErrorNew(
            code_from_name(r.code),
            r.message && r.message[0] ? r.message : "dfrepo agent: action failed");
      }
      reply_free(&r);
      break;
    }
    logmsg("ignoring unknown message op '%s' from the Python worker", r.op);
    reply_free(&r);
  }
  close(ch);

  char why[640];
  if (io == IO_TIMEOUT) {
    /* The worker did not answer in time (not even by its own, earlier deadline): it is
       stuck, so it goes, and the next action gets a fresh one.  No location in the
       message: it is the model's name, the action and the deadline. */
    snprintf(why, sizeof why, "%s of model '%s' did not finish within its deadline of %g s",
             aname, info.model, info.deadline);
    expire_action(gen, why);
    if (result) TRITONSERVER_ErrorDelete(result);
    result = errorf(TRITONSERVER_ERROR_UNAVAILABLE,
                    "dfrepo agent: %s (%s); the Python worker (pid %d) was stopped and a new one "
                    "takes the next action", why, info.source, (int)pid);
  } else if (io != IO_OK && !result) {
    if (stop_reason(gen, why, sizeof why) == 0) {
      /* We stopped that worker on purpose (another action's deadline): say so. */
      result = errorf(TRITONSERVER_ERROR_UNAVAILABLE,
                      "dfrepo agent: %s of model '%s' was interrupted and did not complete: %s",
                      aname, info.model, why);
    } else {
      snprintf(why, sizeof why, "the Python worker (pid %d) failed during %s of model '%s'",
               (int)pid, aname, info.model);
      finish_action(gen, FINISH_BROKEN, why);
      result = errorf(TRITONSERVER_ERROR_UNAVAILABLE,
                      "dfrepo agent: the Python worker (pid %d) died during %s of %s; it is "
                      "restarted on the next action (see the server log for its last output)",
                      (int)pid, aname, info.location);
    }
  } else {
    snprintf(why, sizeof why, "%s of model '%s' is stuck in it", aname, info.model);
    finish_action(gen, retire ? FINISH_RETIRE : FINISH_OK, why);
  }
  info_free(&info);
  return result;
}

/* ---- exported entry points -------------------------------------------------------- */

EXPORT TRITONSERVER_Error* TRITONREPOAGENT_Initialize(TRITONREPOAGENT_Agent* agent) {
  (void)agent;
  uint32_t major = 0, minor = 0;
  TRITONSERVER_Error* e = TRITONREPOAGENT_ApiVersion(&major, &minor);
  if (e) return e;
  if (major != 0 || minor < 1)
    return errorf(TRITONSERVER_ERROR_UNSUPPORTED,
                  "dfrepo agent: needs repository-agent API 0.x with minor >= 1, Triton has "
                  "%u.%u", major, minor);
  return NULL;
}

EXPORT TRITONSERVER_Error* TRITONREPOAGENT_Finalize(TRITONREPOAGENT_Agent* agent) {
  (void)agent;
  /* Triton may dlclose us after this: leave nothing behind (no worker, no fd). */
  pthread_mutex_lock(&g_mu);
  stop_worker_locked(&g_cur, 5.0);
  for (int i = 0; i < MAX_RETIRED; i++)
    if (g_retired[i].pid > 0) stop_worker_locked(&g_retired[i], 2.0);
  sweep_unreaped_locked();
  pthread_mutex_unlock(&g_mu);
  return NULL;
}

EXPORT TRITONSERVER_Error* TRITONREPOAGENT_ModelAction(TRITONREPOAGENT_Agent* agent,
                                                       TRITONREPOAGENT_AgentModel* model,
                                                       const TRITONREPOAGENT_ActionType action) {
  return run_action(agent, model, action);
}
