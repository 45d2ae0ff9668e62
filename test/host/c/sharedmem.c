/*
 * A client with a shared memory object for the daemon's SharedObjects tests: maps two pages
 * (argv[1] "anon": MAP_SHARED|MAP_ANONYMOUS; "memfd": a memfd), fills them with 0x11, prints
 * "<start> <end>" in hex, then obeys lines on stdin: "truncate" (memfd: shrink to one page),
 * "dump" (prints the first byte of each page in hex), "exit".
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int memfd = argc > 1 && !strcmp(argv[1], "memfd");
	int fd = -1;
	if (memfd) {
		fd = memfd_create("sharedmem-test", 0);
		if (fd < 0 || ftruncate(fd, 8192))
			return 1;
	}
	unsigned char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED | (memfd ? 0 : MAP_ANONYMOUS), fd, 0);
	if (p == MAP_FAILED)
		return 1;
	memset(p, 0x11, 8192);
	printf("%lx %lx\n", (unsigned long)p, (unsigned long)p + 8192);
	fflush(stdout);
	char line[64];
	while (fgets(line, sizeof(line), stdin)) {
		if (!strncmp(line, "truncate", 8) && fd >= 0 && ftruncate(fd, 4096))
			return 1;
		if (!strncmp(line, "dump", 4)) {
			/* The second page may be past the end of the file now: only look where it exists. */
			printf("%02x %02x\n", p[0], fd >= 0 && lseek(fd, 0, SEEK_END) <= 4096 ? 0xff : p[4096]);
			fflush(stdout);
		}
		if (!strncmp(line, "exit", 4))
			return 0;
		if (!strncmp(line, "truncate", 8)) {
			printf("truncated\n");
			fflush(stdout);
		}
	}
	return 0;
}
