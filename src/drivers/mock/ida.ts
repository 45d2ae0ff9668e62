/** Lowest-free integer ids, as the kernel's IDA hands them out. */
export class Ida {
  private readonly used = new Set<number>();

  alloc(): number {
    let id = 0;
    while (this.used.has(id)) id++;
    this.used.add(id);
    return id;
  }

  free(id: number): void {
    this.used.delete(id);
  }

  get size(): number {
    return this.used.size;
  }
}
