/**
 * Linux errno values (x86-64, asm-generic) used by iommufd and its callers.
 * The numbers are facts of the ABI; the names are the kernel's.
 */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  EMFILE: 24,
  ENOTTY: 25,
  ENOSPC: 28,
  ESPIPE: 29,
  ERANGE: 34,
  EDEADLK: 35,
  ENOSYS: 38,
  EBADE: 52,
  EOVERFLOW: 75,
  EBADFD: 77,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ECONNRESET: 104,
  ENOTRECOVERABLE: 131,
} as const;

export type ErrnoName = keyof typeof Errno;
export type ErrnoValue = (typeof Errno)[ErrnoName];

/** EDEADLOCK is an alias of EDEADLK on x86. */
export const EDEADLOCK = Errno.EDEADLK;

const names = new Map<number, ErrnoName>();
for (const [name, value] of Object.entries(Errno) as [ErrnoName, number][]) names.set(value, name);

/** "EINVAL" for 22, "errno 200" for a number we do not know. */
export function errnoName(errno: number): string {
  return names.get(errno) ?? `errno ${errno}`;
}
