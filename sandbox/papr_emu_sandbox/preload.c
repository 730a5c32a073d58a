/*
 * papr-emu sandbox preload: the guest kernel's side of librtas, in user space.
 *
 * Loaded with LD_PRELOAD into every process of a `papr-emu sandbox`, it stands in for
 * the pseries kernel interfaces librtas and drmgr use, and forwards them to the sandbox
 * bridge (the `papr-emu sandbox` process) over the unix socket named by
 * $PAPR_EMU_SANDBOX_SOCKET:
 *
 *  - syscall(__NR_rtas, struct rtas_args *): librtas 2.0.4 defines __NR_rtas as 255 when
 *    the headers lack it (every non-powerpc target; 255 is inotify_rm_watch on x86_64),
 *    newer librtas calls syscall(-1, ...) off powerpc. The big-endian rtas_args is
 *    decoded, the call made by the bridge (buffers are read from and written to the
 *    /dev/mem stand-in, which librtas maps), and the return cells written back in place,
 *    big-endian, as the kernel's sys_rtas does.
 *  - /proc/ppc64/ofdt: open/openat/fopen of it give a descriptor (or stream) whose every
 *    write is one command ("add_node PATH ...", "remove_node PATH", ...) applied by the
 *    bridge before write() returns, as the kernel applies it (error: -1, errno EINVAL).
 *  - statx: PRoot 5.1 (Debian 12) does not translate statx paths, so `ls` of a bound
 *    directory fails; statx is answered from fstatat, which PRoot translates.
 *
 * Wire format (host byte order, one request and one reply at a time per connection):
 *   request:  u32 kind (1 rtas, 2 ofdt), u32 length, then the payload
 *             rtas: u32 token, u32 nargs, u32 nret, nargs x u32 args
 *             ofdt: the bytes written
 *   reply:    i32 error (0, or an errno), u32 count, count x u32 cells (rtas: the rets)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

#define SOCKET_VARIABLE "PAPR_EMU_SANDBOX_SOCKET"
#define OFDT_PATH "/proc/ppc64/ofdt"
#define RTAS_MAX_ARGS 16 /* struct rtas_args.args in librtas and the kernel */
#define KIND_RTAS 1
#define KIND_OFDT 2
#define MAX_FDS 4096

struct rtas_args_be {
	uint32_t token;
	uint32_t nargs;
	uint32_t nret;
	uint32_t args[RTAS_MAX_ARGS];
	uint32_t *rets;
};

static pthread_mutex_t bridge_lock = PTHREAD_MUTEX_INITIALIZER;
static int bridge_fd = -1;
static pid_t bridge_pid; /* the process that opened bridge_fd: a child reconnects */
static unsigned char ofdt_fds[MAX_FDS];

static void *next(const char *name)
{
	void *symbol = dlsym(RTLD_NEXT, name);
	if (!symbol) {
		fprintf(stderr, "papr-emu sandbox: %s not found in libc\n", name);
		abort();
	}
	return symbol;
}

static ssize_t real_write(int fd, const void *buf, size_t count)
{
	static ssize_t (*fn)(int, const void *, size_t);
	if (!fn)
		fn = next("write");
	return fn(fd, buf, count);
}

static int full_io(int fd, void *buf, size_t len, int sending)
{
	char *p = buf;
	while (len) {
		ssize_t n = sending ? real_write(fd, p, len) : read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int connect_bridge(void)
{
	const char *path = getenv(SOCKET_VARIABLE);
	struct sockaddr_un address = {.sun_family = AF_UNIX};
	int fd;

	if (!path || strlen(path) >= sizeof(address.sun_path))
		return -1;
	strcpy(address.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&address, sizeof(address)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* One request and its reply. Returns 0 and fills *error and cells, or -1 (bridge gone: EIO). */
static int ask_bridge(uint32_t kind, const void *payload, uint32_t length, int32_t *error, uint32_t *cells,
		      uint32_t max_cells)
{
	uint32_t header[2] = {kind, length};
	uint32_t count;
	int32_t reply_error;
	int rc = -1;

	pthread_mutex_lock(&bridge_lock);
	if (bridge_fd >= 0 && bridge_pid != getpid()) {
		close(bridge_fd); /* the parent's connection, inherited over fork */
		bridge_fd = -1;
	}
	if (bridge_fd < 0) {
		bridge_fd = connect_bridge();
		bridge_pid = getpid();
	}
	if (bridge_fd >= 0 && full_io(bridge_fd, header, sizeof(header), 1) == 0 &&
	    full_io(bridge_fd, (void *)payload, length, 1) == 0 &&
	    full_io(bridge_fd, &reply_error, sizeof(reply_error), 0) == 0 &&
	    full_io(bridge_fd, &count, sizeof(count), 0) == 0 && count <= max_cells &&
	    full_io(bridge_fd, cells, count * sizeof(uint32_t), 0) == 0) {
		*error = reply_error;
		rc = 0;
	} else if (bridge_fd >= 0) {
		close(bridge_fd);
		bridge_fd = -1;
	}
	pthread_mutex_unlock(&bridge_lock);
	return rc;
}

/* The kernel's sys_rtas: 0, or -1 with errno. */
static long rtas_call(struct rtas_args_be *args)
{
	uint32_t request[3 + RTAS_MAX_ARGS];
	uint32_t rets[RTAS_MAX_ARGS];
	uint32_t nargs = be32toh(args->nargs), nret = be32toh(args->nret), i;
	int32_t error;

	if (nargs + nret > RTAS_MAX_ARGS || nargs > RTAS_MAX_ARGS || nret > RTAS_MAX_ARGS) {
		errno = EINVAL; /* as sys_rtas: the cells must fit in args[] */
		return -1;
	}
	request[0] = be32toh(args->token);
	request[1] = nargs;
	request[2] = nret;
	for (i = 0; i < nargs; i++)
		request[3 + i] = be32toh(args->args[i]);
	if (ask_bridge(KIND_RTAS, request, (3 + nargs) * sizeof(uint32_t), &error, rets, RTAS_MAX_ARGS) < 0) {
		errno = EIO;
		return -1;
	}
	if (error) {
		errno = error;
		return -1;
	}
	for (i = 0; i < nret; i++)
		args->args[nargs + i] = htobe32(rets[i]);
	return 0;
}

long syscall(long number, ...)
{
	static long (*real)(long, ...);
	va_list ap;
	long a[6];
	int i;

	va_start(ap, number);
	for (i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	if ((number == 255 || number == -1) && getenv(SOCKET_VARIABLE))
		return rtas_call((struct rtas_args_be *)a[0]);
	if (!real)
		real = next("syscall");
	return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* ---- /proc/ppc64/ofdt ---- */

static int is_ofdt(const char *path)
{
	return path && strcmp(path, OFDT_PATH) == 0 && getenv(SOCKET_VARIABLE);
}

static ssize_t ofdt_command(const char *buf, size_t count)
{
	int32_t error;
	uint32_t none[1];

	if (count > UINT32_MAX) {
		errno = EINVAL;
		return -1;
	}
	if (ask_bridge(KIND_OFDT, buf, (uint32_t)count, &error, none, 0) < 0) {
		errno = EIO;
		return -1;
	}
	if (error) {
		errno = error;
		return -1;
	}
	return (ssize_t)count;
}

static int mark_ofdt(int fd)
{
	if (fd >= 0 && fd < MAX_FDS)
		ofdt_fds[fd] = 1;
	return fd;
}

/* The mode argument open() takes with O_CREAT or O_TMPFILE. */
#define OPEN_MODE(flags, last)                             \
	({                                                 \
		mode_t mode_ = 0;                          \
		if ((flags) & (O_CREAT | O_TMPFILE)) {     \
			va_list ap_;                       \
			va_start(ap_, last);               \
			mode_ = va_arg(ap_, mode_t);       \
			va_end(ap_);                       \
		}                                          \
		mode_;                                     \
	})

int open(const char *path, int flags, ...)
{
	static int (*real)(const char *, int, ...);
	mode_t mode = OPEN_MODE(flags, flags);
	if (!real)
		real = next("open");
	int fd = real(path, flags, mode);
	return is_ofdt(path) ? mark_ofdt(fd) : fd;
}

int open64(const char *path, int flags, ...)
{
	static int (*real)(const char *, int, ...);
	mode_t mode = OPEN_MODE(flags, flags);
	if (!real)
		real = next("open64");
	int fd = real(path, flags, mode);
	return is_ofdt(path) ? mark_ofdt(fd) : fd;
}

int openat(int dirfd, const char *path, int flags, ...)
{
	static int (*real)(int, const char *, int, ...);
	mode_t mode = OPEN_MODE(flags, flags);
	if (!real)
		real = next("openat");
	int fd = real(dirfd, path, flags, mode);
	return is_ofdt(path) ? mark_ofdt(fd) : fd;
}

int openat64(int dirfd, const char *path, int flags, ...)
{
	static int (*real)(int, const char *, int, ...);
	mode_t mode = OPEN_MODE(flags, flags);
	if (!real)
		real = next("openat64");
	int fd = real(dirfd, path, flags, mode);
	return is_ofdt(path) ? mark_ofdt(fd) : fd;
}

ssize_t write(int fd, const void *buf, size_t count)
{
	if (fd >= 0 && fd < MAX_FDS && ofdt_fds[fd])
		return ofdt_command(buf, count);
	return real_write(fd, buf, count);
}

int close(int fd)
{
	static int (*real)(int);
	if (!real)
		real = next("close");
	if (fd >= 0 && fd < MAX_FDS)
		ofdt_fds[fd] = 0;
	return real(fd);
}

static ssize_t ofdt_stream_write(void *cookie, const char *buf, size_t size)
{
	(void)cookie;
	return ofdt_command(buf, size);
}

static FILE *ofdt_stream(void)
{
	cookie_io_functions_t io = {.write = ofdt_stream_write};
	FILE *stream = fopencookie(NULL, "w", io);
	if (stream)
		setvbuf(stream, NULL, _IOFBF, 1 << 16); /* one command per flush, as one write() */
	return stream;
}

FILE *fopen(const char *path, const char *mode)
{
	static FILE *(*real)(const char *, const char *);
	if (is_ofdt(path) && mode[0] != 'r')
		return ofdt_stream();
	if (!real)
		real = next("fopen");
	return real(path, mode);
}

FILE *fopen64(const char *path, const char *mode)
{
	static FILE *(*real)(const char *, const char *);
	if (is_ofdt(path) && mode[0] != 'r')
		return ofdt_stream();
	if (!real)
		real = next("fopen64");
	return real(path, mode);
}

/* ---- statx, from fstatat (which PRoot translates) ---- */

static struct statx_timestamp timestamp(struct timespec t)
{
	struct statx_timestamp out = {.tv_sec = t.tv_sec, .tv_nsec = (uint32_t)t.tv_nsec};
	return out;
}

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *out)
{
	static int (*real)(int, const char *, int, unsigned int, struct statx *);
	struct stat st;

	if (!getenv(SOCKET_VARIABLE)) {
		if (!real)
			real = next("statx");
		return real(dirfd, path, flags, mask, out);
	}
	if (fstatat(dirfd, path, &st, flags & (AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT)) < 0)
		return -1;
	memset(out, 0, sizeof(*out));
	out->stx_mask = STATX_BASIC_STATS;
	out->stx_blksize = (uint32_t)st.st_blksize;
	out->stx_nlink = (uint32_t)st.st_nlink;
	out->stx_uid = st.st_uid;
	out->stx_gid = st.st_gid;
	out->stx_mode = (uint16_t)st.st_mode;
	out->stx_ino = st.st_ino;
	out->stx_size = (uint64_t)st.st_size;
	out->stx_blocks = (uint64_t)st.st_blocks;
	out->stx_atime = timestamp(st.st_atim);
	out->stx_mtime = timestamp(st.st_mtim);
	out->stx_ctime = timestamp(st.st_ctim);
	out->stx_rdev_major = major(st.st_rdev);
	out->stx_rdev_minor = minor(st.st_rdev);
	out->stx_dev_major = major(st.st_dev);
	out->stx_dev_minor = minor(st.st_dev);
	return 0;
}
