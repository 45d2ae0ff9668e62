// Shared by the uapi tests: the compiler's view of the real 6.12.117 headers
// (tools/layout/gen.sh) and the kernel → TypeScript naming rule.
import { readFileSync } from 'node:fs';

export interface LayoutField {
  offset: number;
  size: number;
}
export interface LayoutStruct {
  size: number;
  fields: Record<string, LayoutField>;
}
export interface Layout {
  kernel: string;
  structs: Record<string, LayoutStruct>;
  ioctls: Record<string, number>;
  constants: Record<string, number>;
}

export const layout: Layout = JSON.parse(
  readFileSync(new URL('./layout-data.json', import.meta.url), 'utf8'),
) as Layout;

/** `out_ioas_id` → outIoasId, `__reserved2` → reserved2. */
export function camel(kernelName: string): string {
  return kernelName.replace(/^_+/, '').replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

export function structLayout(name: string): LayoutStruct {
  const s = layout.structs[name];
  if (!s) throw new Error(`layout-data.json has no struct ${name}`);
  return s;
}
