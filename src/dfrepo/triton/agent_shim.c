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
 *                                    "location":..,"parameters":{..},"config":{..}|null}
 *                   worker -> shim  {"op":"acquire"}  -> shim answers
 *                                   {"ok":true,"path":..} | {"ok":false,"code":..,"message":..}
 *                   worker -> shim  {"op":"done","ok":true,"location":null|".."}
 *                                 | {"op":"done","ok":false,"code":..,"message":..}
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

/* The worker's entry point.  argv: [python, -c, BOOTSTRAP, record-path-or-"", fd]. */
static const char BOOTSTRAP[] =
    "import json, sys\n"
    "if sys.path and sys.path[0] == '':\n"
    "    del sys.path[0]\n"
    "if sys.argv[1]:\n"
    "    try:\n"
    "        with open(sys.argv[1], encoding='utf-8') as f:\n"
    "            sys.path[:0] = [p for p in json.load(f).get('sys_path', []) if p not in sys.path]\n"
    "    except (OSError, ValueError) as exc:\n"
    "        print('[dfrepo-agent] ignoring unreadable %s: %s' % (sys.argv[1], exc), file=sys.stderr)\n"
    "from dfrepo.triton.worker import main\n"
    "sys.exit(main(sys.argv[2:]))\n";

static const char* ACTION_NAMES[] = {"LOAD", "LOAD_COMPLETE", "LOAD_FAIL", "UNLOAD",
                                     "UNLOAD_COMPLETE"};

/* ---- worker state (guarded by g_mu) --------------------------------------------- */

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pid_t g_pid = -1; /* worker pid, -1 when none */
static int g_ctl = -1;   /* our end of the control socket */

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
  int ok; /* -1 unknown, 0 false, 1 true */
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

/* ---- framing -------------------------------------------------------------------- */

static int write_all(int fd, const char* p, size_t n) {
  while (n) {
    ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0) { if (errno == EINTR) continue; return -1; }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int read_all(int fd, char* p, size_t n) {
  while (n) {
    ssize_t r = recv(fd, p, n, 0);
    if (r == 0) return -1; /* EOF */
    if (r < 0) { if (errno == EINTR) continue; return -1; }
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static int write_frame(int fd, const char* body, size_t n) {
  unsigned char h[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                        (unsigned char)(n >> 8), (unsigned char)n};
  if (write_all(fd, (const char*)h, 4)) return -1;
  return write_all(fd, body, n);
}

/* Returns a malloc'd body (NUL-terminated) or NULL on EOF/error. */
static char* read_frame(int fd, size_t* len) {
  unsigned char h[4];
  if (read_all(fd, (char*)h, 4)) return NULL;
  size_t n = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
  if (n > MAX_FRAME) return NULL;
  char* body = malloc(n + 1);
  if (!body) return NULL;
  if (read_all(fd, body, n)) { free(body); return NULL; }
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

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Reap the worker; wait up to `grace` seconds, then SIGKILL. Caller holds g_mu. */
static void stop_worker_locked(double grace) {
  if (g_ctl >= 0) { close(g_ctl); g_ctl = -1; }
  if (g_pid > 0) {
    double deadline = now_s() + grace;
    int st;
    for (;;) {
      pid_t r = waitpid(g_pid, &st, WNOHANG);
      if (r == g_pid || (r < 0 && errno != EINTR)) break;
      if (now_s() >= deadline) {
        kill(g_pid, SIGKILL);
        while (waitpid(g_pid, &st, 0) < 0 && errno == EINTR) {}
        break;
      }
      struct timespec ts = {0, 5 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  }
  g_pid = -1;
}

static void describe_status(int st, char* out, size_t n) {
  if (WIFEXITED(st)) snprintf(out, n, "exit status %d", WEXITSTATUS(st));
  else if (WIFSIGNALED(st)) snprintf(out, n, "signal %d", WTERMSIG(st));
  else snprintf(out, n, "status %d", st);
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
  char* argv[] = {python, "-c", (char*)BOOTSTRAP, have_rec ? rec : "", fdarg, NULL};

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t at;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, sv[1], target);
  posix_spawnattr_init(&at);
  sigset_t none, defs;
  sigemptyset(&none);
  sigemptyset(&defs);
  sigaddset(&defs, SIGINT); sigaddset(&defs, SIGTERM); sigaddset(&defs, SIGPIPE);
  sigaddset(&defs, SIGCHLD); sigaddset(&defs, SIGHUP);
  posix_spawnattr_setsigmask(&at, &none);
  posix_spawnattr_setsigdefault(&at, &defs);
  /* Own process group: a Ctrl-C aimed at tritonserver does not kill the worker in the
     middle of an UNLOAD; it exits when the control socket closes instead. */
  posix_spawnattr_setpgroup(&at, 0);
  posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                    POSIX_SPAWN_SETPGROUP);
  extern char** environ;
  pid_t pid;
  int rc = strchr(python, '/') ? posix_spawn(&pid, python, &fa, &at, argv, environ)
                               : posix_spawnp(&pid, python, &fa, &at, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&at);
  close(sv[1]);
  if (rc != 0) {
    close(sv[0]);
    snprintf(err, errlen,
             "dfrepo agent: cannot start the Python worker '%.1024s': %s (set DFREPO_PYTHON or rerun "
             "'dfrepo install-agent')", python, strerror(rc));
    return -1;
  }
  g_pid = pid;
  g_ctl = sv[0];

  const char* tmo = getenv("DFREPO_AGENT_START_TIMEOUT");
  double timeout = tmo && atof(tmo) > 0 ? atof(tmo) : 60.0;
  double deadline = now_s() + timeout;
  char hello[128];
  for (;;) {
    struct pollfd p = {g_ctl, POLLIN, 0};
    int left = (int)((deadline - now_s()) * 1000);
    if (left <= 0) {
      snprintf(err, errlen, "dfrepo agent: the Python worker '%.1024s' (pid %d) did not become ready "
               "within %.0f s", python, (int)pid, timeout);
      stop_worker_locked(0);
      return -1;
    }
    int pr = poll(&p, 1, left);
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    ssize_t n = recv(g_ctl, hello, sizeof hello - 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n > 0) {
      hello[n] = 0;
      if (strncmp(hello, HELLO_PREFIX, strlen(HELLO_PREFIX)) == 0) return 0;
      snprintf(err, errlen, "dfrepo agent: the Python worker '%.1024s' speaks another protocol "
               "(\"%.40s\"); reinstall the agent with 'dfrepo install-agent'", python, hello);
      stop_worker_locked(0);
      return -1;
    }
    /* EOF: it died during start-up (its traceback is on stderr). */
    int st = 0;
    close(g_ctl); g_ctl = -1;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    g_pid = -1;
    char how[64];
    describe_status(st, how, sizeof how);
    snprintf(err, errlen, "dfrepo agent: the Python worker '%.1024s' exited (%s) before it was ready; "
             "its error is in the server log above. Is dfrepo installed for that interpreter? "
             "Set DFREPO_PYTHON or rerun 'dfrepo install-agent'", python, how);
    return -1;
  }
}

/* Is the worker still running? Reaps it if not. Caller holds g_mu. */
static int worker_alive_locked(void) {
  if (g_pid <= 0) return 0;
  int st;
  pid_t r = waitpid(g_pid, &st, WNOHANG);
  if (r == 0) return 1;
  if (r == g_pid) {
    char how[64];
    describe_status(st, how, sizeof how);
    logmsg("the Python worker (pid %d) died (%s); starting a new one", (int)g_pid, how);
  }
  if (g_ctl >= 0) { close(g_ctl); g_ctl = -1; }
  g_pid = -1;
  return 0;
}

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
  for (;;) {
    ssize_t r = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (r == 1) return 0;
    if (r < 0 && errno == EINTR) continue;
    return -1;
  }
}

/* Open a fresh action channel to a live worker (starting/restarting it as needed).
   Returns our end of the channel, or -1 with err set.  *pid_out = worker pid. */
static int open_channel(char* err, size_t errlen, pid_t* pid_out) {
  pthread_mutex_lock(&g_mu);
  int result = -1;
  for (int attempt = 0; attempt < 2 && result < 0; attempt++) {
    if (!worker_alive_locked() && start_worker_locked(err, errlen)) break;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
      snprintf(err, errlen, "dfrepo agent: socketpair failed: %s", strerror(errno));
      break;
    }
    if (send_fd(g_ctl, sv[1]) == 0) {
      close(sv[1]);
      result = sv[0];
      *pid_out = g_pid;
    } else {
      int e = errno;
      close(sv[0]);
      close(sv[1]);
      logmsg("the Python worker (pid %d) is not answering (%s); restarting it", (int)g_pid,
             strerror(e));
      stop_worker_locked(1.0);
      snprintf(err, errlen, "dfrepo agent: cannot reach the Python worker: %s", strerror(e));
    }
  }
  pthread_mutex_unlock(&g_mu);
  return result;
}

/* The worker behind `pid` broke an action channel: make sure the next action gets a
   new one (unless another thread already replaced it). */
static void discard_worker(pid_t pid) {
  pthread_mutex_lock(&g_mu);
  if (g_pid == pid) stop_worker_locked(2.0);
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

/* Build the request frame for one action. Returns 0 or a Triton error. */
static TRITONSERVER_Error* build_request(TRITONREPOAGENT_Agent* agent,
                                         TRITONREPOAGENT_AgentModel* model,
                                         TRITONREPOAGENT_ActionType action, buf_t* b,
                                         char** location_out) {
  TRITONREPOAGENT_ArtifactType type = TRITONREPOAGENT_ARTIFACT_FILESYSTEM;
  const char* location = NULL;
  TRITONSERVER_Error* e = TRITONREPOAGENT_ModelRepositoryLocation(agent, model, &type, &location);
  if (e) return e;
  *location_out = strdup(location ? location : "");

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
  if (e) return e;
  for (uint32_t i = 0; i < count; i++) {
    const char *k = NULL, *v = NULL;
    e = TRITONREPOAGENT_ModelParameter(agent, model, i, &k, &v);
    if (e) return e;
    if (i) buf_puts(b, ",");
    buf_json_str(b, k ? k : "");
    buf_puts(b, ":");
    buf_json_str(b, v ? v : "");
  }
  buf_puts(b, "},\"config\":");
  TRITONSERVER_Message* msg = NULL;
  e = TRITONREPOAGENT_ModelConfig(agent, model, 1, &msg);
  const char* base = NULL;
  size_t size = 0;
  if (!e && msg) e = TRITONSERVER_MessageSerializeToJson(msg, &base, &size);
  if (!e && base && size) buf_put(b, base, size);
  else buf_puts(b, "null");
  if (e) TRITONSERVER_ErrorDelete(e); /* config is informational: never fail on it */
  if (msg) {
    TRITONSERVER_Error* de = TRITONSERVER_MessageDelete(msg);
    if (de) TRITONSERVER_ErrorDelete(de);
  }
  buf_puts(b, "}");
  if (b->oom) return errorf(TRITONSERVER_ERROR_INTERNAL, "dfrepo agent: out of memory");
  return NULL;
}

static int send_json_reply(int ch, int ok, const char* path, TRITONSERVER_Error_Code code,
                           const char* message) {
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
  int rc = b.oom ? -1 : write_frame(ch, b.p, b.n);
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
  char* location = NULL;
  TRITONSERVER_Error* result = build_request(agent, model, action, &req, &location);
  if (result) { free(req.p); free(location); return result; }

  char err[2048];
  pid_t pid = -1;
  int ch = open_channel(err, sizeof err, &pid);
  if (ch < 0) {
    free(req.p); free(location);
    return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_UNAVAILABLE, err);
  }
  int broken = write_frame(ch, req.p, req.n) != 0;
  free(req.p);
  while (!broken) {
    size_t n = 0;
    char* body = read_frame(ch, &n);
    if (!body) { broken = 1; break; }
    reply_t r;
    if (parse_reply(body, n, &r) || !r.op) {
      free(body);
      reply_free(&r);
      result = errorf(TRITONSERVER_ERROR_INTERNAL,
                      "dfrepo agent: malformed message from the Python worker during %s of %s",
                      aname, location);
      break;
    }
    free(body);
    if (!strcmp(r.op, "acquire")) {
      const char* dir = NULL;
      TRITONSERVER_Error* e = TRITONREPOAGENT_ModelRepositoryLocationAcquire(
          agent, model, TRITONREPOAGENT_ARTIFACT_FILESYSTEM, &dir);
      int w = e ? send_json_reply(ch, 0, NULL, TRITONSERVER_ERROR_INTERNAL,
                                  TRITONSERVER_ErrorMessage(e))
                : send_json_reply(ch, 1, dir, 0, NULL);
      if (e) TRITONSERVER_ErrorDelete(e);
      reply_free(&r);
      if (w) { broken = 1; break; }
      continue;
    }
    if (!strcmp(r.op, "done")) {
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
  if (broken && !result) {
    discard_worker(pid);
    result = errorf(TRITONSERVER_ERROR_UNAVAILABLE,
                    "dfrepo agent: the Python worker (pid %d) died during %s of %s; it is "
                    "restarted on the next action (see the server log for its last output)",
                    (int)pid, aname, location);
  }
  free(location);
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
  stop_worker_locked(5.0);
  pthread_mutex_unlock(&g_mu);
  return NULL;
}

EXPORT TRITONSERVER_Error* TRITONREPOAGENT_ModelAction(TRITONREPOAGENT_Agent* agent,
                                                       TRITONREPOAGENT_AgentModel* model,
                                                       const TRITONREPOAGENT_ActionType action) {
  return run_action(agent, model, action);
}
