/**
 * The node flags an entry point asks for in its `#!` line (`#!/usr/bin/env -S node FLAGS`), so
 * that the conformance run starts the CLI with exactly the runtime an installed `iommufd-ts`
 * command gets. A file without such a line (another entry point) gets none.
 */
import { readFileSync } from 'node:fs';

export function nodeFlagsOf(file: string): string[] {
  let first = '';
  try {
    first = readFileSync(file, 'utf8').split('\n', 1)[0] ?? '';
  } catch {
    return [];
  }
  const m = /^#!\S*\/env\s+(?:-S\s+)?node((?:\s+-\S+)*)\s*$/.exec(first) ?? /^#!\S*\/node((?:\s+-\S+)*)\s*$/.exec(first);
  return m ? m[1]!.trim().split(/\s+/).filter(Boolean) : [];
}
