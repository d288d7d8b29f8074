/* Stub-resolver client: getaddrinfo() from musl libc (built static with musl-gcc), then a TCP
 * connection to the first address.
 *
 * Usage: musl_client NAME PORT ROUNDS [--resolv-conf FILE] [--family any|4|6]
 *   --resolv-conf FILE  resolve with FILE as /etc/resolv.conf: the program enters a private
 *                       mount namespace itself (unshare(CLONE_NEWNS), / made rprivate, FILE
 *                       bind-mounted over /etc/resolv.conf); needs root.
 *   --family            AF_UNSPEC (default: musl sends A and AAAA in parallel), AF_INET, AF_INET6.
 * Prints one JSON line (README.md).
 *
 * Build: musl-gcc -static -O2 -Wall -Wextra -o musl_client musl_client.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_KEYS 512

struct tally {
	char *key[MAX_KEYS];
	int count[MAX_KEYS];
	int n;
};

static void bump(struct tally *t, const char *key)
{
	for (int i = 0; i < t->n; i++) {
		if (strcmp(t->key[i], key) == 0) {
			t->count[i]++;
			return;
		}
	}
	if (t->n < MAX_KEYS) {
		t->key[t->n] = strdup(key);
		t->count[t->n++] = 1;
	}
}

static void json_str(const char *s)
{
	putchar('"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\')
			printf("\\%c", *p);
		else if (*p < 0x20 || *p == 0x7f)
			printf("\\u%04x", *p);
		else
			putchar(*p);
	}
	putchar('"');
}

static void json_map(const struct tally *t)
{
	putchar('{');
	for (int i = 0; i < t->n; i++) {
		if (i)
			printf(", ");
		json_str(t->key[i]);
		printf(": %d", t->count[i]);
	}
	putchar('}');
}

static void usage(const char *msg)
{
	fprintf(stderr, "musl_client: %s\nusage: musl_client NAME PORT ROUNDS [--resolv-conf FILE] [--family any|4|6]\n", msg);
	exit(2);
}

static long number(const char *s, const char *what)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || !*s || *end || v < 0) {
		fprintf(stderr, "musl_client: bad %s: %s\n", what, s);
		exit(2);
	}
	return v;
}

static int use_resolv_conf(const char *path)
{
	if (access(path, R_OK) != 0) {
		fprintf(stderr, "musl_client: --resolv-conf %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (unshare(CLONE_NEWNS) != 0) {
		fprintf(stderr, "musl_client: unshare(CLONE_NEWNS): %s\n", strerror(errno));
		return -1;
	}
	if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
		fprintf(stderr, "musl_client: mount --make-rprivate /: %s\n", strerror(errno));
		return -1;
	}
	if (mount(path, "/etc/resolv.conf", NULL, MS_BIND, NULL) != 0) {
		fprintf(stderr, "musl_client: bind %s over /etc/resolv.conf: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Connects (2 s), reads up to 64 bytes until EOF (2 s). Returns 0 and the trimmed text in
 * reply, or -1 and the error in err. */
static int greet(const struct sockaddr *sa, socklen_t len, char *reply, char *err, size_t errlen)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "connect: %s", strerror(errno));
		return -1;
	}
	int ret = -1;
	if (connect(fd, sa, len) != 0) {
		if (errno != EINPROGRESS) {
			snprintf(err, errlen, "connect: %s", strerror(errno));
			goto out;
		}
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int r = poll(&p, 1, 2000);
		if (r == 0) {
			snprintf(err, errlen, "connect: timed out");
			goto out;
		}
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (r < 0 || soerr) {
			snprintf(err, errlen, "connect: %s", strerror(r < 0 ? errno : soerr));
			goto out;
		}
	}
	size_t got = 0;
	char buf[65];
	while (got < 64) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, 2000);
		if (r == 0) {
			if (!got) {
				snprintf(err, errlen, "read: timed out");
				goto out;
			}
			break;
		}
		ssize_t n = read(fd, buf + got, 64 - got);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0) {
			if (!got) {
				snprintf(err, errlen, "read: %s", strerror(errno));
				goto out;
			}
			break;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = 0;
	char *s = buf;
	while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
		s++;
	size_t l = strlen(s);
	while (l && (s[l - 1] == ' ' || s[l - 1] == '\t' || s[l - 1] == '\r' || s[l - 1] == '\n'))
		s[--l] = 0;
	memcpy(reply, s, l + 1);
	ret = 0;
out:
	close(fd);
	return ret;
}

int main(int argc, char **argv)
{
	const char *pos[3];
	int npos = 0;
	const char *resolv = NULL, *family = "any";
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--resolv-conf") || !strcmp(argv[i], "--family")) {
			if (i + 1 >= argc)
				usage("option needs a value");
			if (argv[i][2] == 'r')
				resolv = argv[++i];
			else
				family = argv[++i];
		} else if (!strncmp(argv[i], "--", 2)) {
			usage("unknown option");
		} else if (npos < 3) {
			pos[npos++] = argv[i];
		} else {
			usage("too many arguments");
		}
	}
	if (npos != 3)
		usage("need NAME PORT ROUNDS");
	const char *name = pos[0];
	long port = number(pos[1], "PORT"), rounds = number(pos[2], "ROUNDS");
	int fam;
	if (!strcmp(family, "any"))
		fam = AF_UNSPEC;
	else if (!strcmp(family, "4"))
		fam = AF_INET;
	else if (!strcmp(family, "6"))
		fam = AF_INET6;
	else
		usage("--family is any, 4 or 6");
	if (resolv && use_resolv_conf(resolv) != 0)
		return 2;

	struct tally replies = {0}, errors = {0}, seen = {0};
	for (long r = 0; r < rounds; r++) {
		struct addrinfo hints = {.ai_family = fam, .ai_socktype = SOCK_STREAM}, *res = NULL;
		int gai = getaddrinfo(name, NULL, &hints, &res);
		char text[256], reply[80], addr[INET6_ADDRSTRLEN];
		if (gai != 0) {
			snprintf(text, sizeof text, "resolve: %s", gai_strerror(gai));
			bump(&errors, text);
			continue;
		}
		struct sockaddr_storage ss;
		socklen_t len = res->ai_addrlen;
		memcpy(&ss, res->ai_addr, len);
		freeaddrinfo(res);
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
			sin->sin_port = htons((unsigned short)port);
			inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof addr);
		} else {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
			sin6->sin6_port = htons((unsigned short)port);
			inet_ntop(AF_INET6, &sin6->sin6_addr, addr, sizeof addr);
		}
		int known = 0;
		for (int i = 0; i < seen.n; i++)
			known |= !strcmp(seen.key[i], addr);
		if (!known)
			bump(&seen, addr);
		if (greet((struct sockaddr *)&ss, len, reply, text, sizeof text) == 0)
			bump(&replies, reply);
		else
			bump(&errors, text);
	}
	printf("{\"rounds\": %ld, \"replies\": ", rounds);
	json_map(&replies);
	printf(", \"errors\": ");
	json_map(&errors);
	printf(", \"addresses\": [");
	for (int i = 0; i < seen.n; i++) {
		if (i)
			printf(", ");
		json_str(seen.key[i]);
	}
	printf("]}\n");
	return 0;
}
