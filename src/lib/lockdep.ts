/**
 * A model of the kernel's locks and a lockdep-style order checker.
 *
 * Every lock belongs to a class (e.g. "iopt->iova_rwsem"); the checker learns the order in which
 * classes are nested ("A held while taking B" adds the edge A -> B) and reports an inversion as
 * soon as an edge would close a cycle. The process-wide checker starts out seeded with the
 * kernel's documented order (KERNEL_LOCK_ORDER), so taking two documented classes the wrong way
 * round is reported the first time it happens, not only after the right order was seen. The
 * emulator is single-threaded, so a lock is never contended: what matters is that the code takes
 * locks in the kernel's order, which keeps the model honest about which state each step may touch.
 */

export class LockOrderViolation extends Error {
  override readonly name = 'LockOrderViolation';
}

export type LockMode = 'read' | 'write';

export class LockClass {
  /** Classes that may be taken while this one is held: seeded plus learned. */
  readonly after = new Set<LockClass>();
  /** Of those, the ones actually seen taken while this one was held. */
  readonly learned = new Set<LockClass>();
  constructor(readonly name: string) {}
}

export class LockDep {
  private readonly classes = new Map<string, LockClass>();
  /** Locks held now, outermost first (the mode is not needed for ordering). */
  private readonly held: Lock[] = [];
  readonly violations: string[] = [];
  /** Throw on a violation (default) or only record it. */
  strict = true;

  lockClass(name: string): LockClass {
    let c = this.classes.get(name);
    if (!c) {
      c = new LockClass(name);
      this.classes.set(name, c);
    }
    return c;
  }

  /** Names of the classes currently held, outermost first. */
  heldNames(): string[] {
    return this.held.map((h) => h.cls.name);
  }

  /**
   * Declare an order before any lock is taken (the kernel's documented nesting): an acquisition
   * against it is then reported even if the right order was never seen. A seed that closes a
   * cycle is refused.
   */
  seed(order: readonly (readonly [string, string])[]): void {
    for (const [outer, inner] of order) {
      const a = this.lockClass(outer);
      const b = this.lockClass(inner);
      if (a === b || this.reaches(b, a)) throw new LockOrderViolation(`seeding ${outer} -> ${inner} closes a cycle`);
      a.after.add(b);
    }
  }

  /** Learned edges (nestings actually seen) as "A -> B" strings (for docs and tests). */
  edges(): string[] {
    const out: string[] = [];
    for (const c of this.classes.values()) for (const d of c.learned) out.push(`${c.name} -> ${d.name}`);
    return out.sort();
  }

  acquire(lock: Lock, _mode: LockMode): void {
    const held = this.held;
    for (let i = 0; i < held.length; i++) {
      const h = held[i]!;
      if (h === lock) this.report(`recursive acquisition of ${lock.describe()}`);
      const a = h.cls;
      const b = lock.cls;
      if (a === b) {
        if (!lock.nestable) this.report(`${b.name} taken while another ${b.name} is held without a nesting annotation`);
        continue;
      }
      if (!a.after.has(b)) {
        if (this.reaches(b, a)) {
          this.report(
            `lock order inversion: taking ${b.name} while holding ${a.name}, but ${b.name} -> ${a.name} is the kernel's ` +
              `order or was seen before (held: ${this.heldNames().join(', ')})`,
          );
        }
        a.after.add(b);
      }
      a.learned.add(b);
    }
    held.push(lock);
  }

  release(lock: Lock): void {
    const held = this.held;
    const last = held.length - 1;
    if (last >= 0 && held[last] === lock) {
      held.pop();
      return;
    }
    for (let i = last - 1; i >= 0; i--) {
      if (held[i] === lock) {
        held.splice(i, 1);
        return;
      }
    }
    this.report(`release of ${lock.describe()} which is not held`);
  }

  /** Assert that a lock is held (lockdep_assert_held). */
  assertHeld(lock: Lock): void {
    if (!this.held.includes(lock)) this.report(`${lock.describe()} must be held here`);
  }

  /** True when nothing is held: every ioctl must end like this. */
  idle(): boolean {
    return this.held.length === 0;
  }

  /** Drop everything still held (after an internal error) and record it. */
  resetHeld(): void {
    if (this.held.length) this.violations.push(`locks still held at the end of a call: ${this.heldNames().join(', ')}`);
    this.held.length = 0;
  }

  private reaches(from: LockClass, to: LockClass): boolean {
    const seen = new Set<LockClass>();
    const stack = [from];
    while (stack.length) {
      const c = stack.pop()!;
      if (c === to) return true;
      if (seen.has(c)) continue;
      seen.add(c);
      for (const d of c.after) stack.push(d);
    }
    return false;
  }

  private report(msg: string): void {
    this.violations.push(msg);
    if (this.strict) throw new LockOrderViolation(msg);
  }
}


/** A mutex or rwsem instance. `nestable` allows holding two instances of the class (e.g. two IOASes). */
export class Lock {
  readonly cls: LockClass;
  constructor(
    className: string,
    readonly owner = '',
    readonly nestable = false,
    private readonly dep: LockDep = lockdep,
  ) {
    this.cls = dep.lockClass(className);
  }

  describe(): string {
    return this.owner ? `${this.cls.name} (${this.owner})` : this.cls.name;
  }

  lock(): void {
    this.dep.acquire(this, 'write');
  }
  read(): void {
    this.dep.acquire(this, 'read');
  }
  unlock(): void {
    this.dep.release(this);
  }
  assertHeld(): void {
    this.dep.assertHeld(this);
  }
}

/**
 * The kernel's documented nesting (reference §5, checked against the 6.12 source), outermost
 * first. The process-wide checker is seeded with it.
 */
export const KERNEL_LOCK_ORDER: readonly (readonly [string, string])[] = [
  // selftest.c: MOCK_DOMAIN / MOCK_DOMAIN_REPLACE attach or replace, and a SELFTEST object's
  // destroy detaches, under down_write(&mock_dev->iopf_rwsem); TRIGGER_IOPF reports under down_read.
  ['mock_dev->iopf_rwsem', 'ioas->mutex'],
  ['mock_dev->iopf_rwsem', 'igroup->lock'],
  ['mock_dev->iopf_rwsem', 'fault->lock'],
  ['ioas->mutex', 'igroup->lock'],
  ['ioas->mutex', 'iopt->domains_rwsem'],
  ['ioas->mutex', 'iopt->iova_rwsem'],
  ['igroup->lock', 'iopt->iova_rwsem'],
  // iommu_attach/replace/detach_group_handle take group->mutex inside the igroup lock.
  ['igroup->lock', 'group->mutex'],
  // IOPF enable/disable (idev->iopf_lock) and the auto-response of an attachment's faults
  // (fault->mutex) happen under the igroup lock.
  ['igroup->lock', 'idev->iopf_lock'],
  ['igroup->lock', 'fault->mutex'],
  ['access->ioas_lock', 'iopt->domains_rwsem'],
  ['access->ioas_lock', 'iopt->iova_rwsem'],
  ['iopt->domains_rwsem', 'iopt->iova_rwsem'],
  ['iopt->iova_rwsem', 'pages->mutex'],
  ['iopt->domains_rwsem', 'pages->mutex'],
  // fault.c: iommufd_auto_response_faults and the fault fd's read take the spinlock inside the mutex.
  ['fault->mutex', 'fault->lock'],
];

/** The process-wide checker (the kernel has one lockdep too), seeded with the kernel's order. */
export const lockdep = new LockDep();
lockdep.seed(KERNEL_LOCK_ORDER);
