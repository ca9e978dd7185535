/** Node's built-in modules, reached without an ``import`` statement so the same build
 * loads in browsers (``process.getBuiltinModule``, Node ≥ 20.16). */

interface NodeProcess {
  getBuiltinModule?: (name: string) => unknown;
  versions?: { node?: string };
}

export function nodeBuiltin<T>(name: string): T | null {
  const proc = (globalThis as { process?: NodeProcess }).process;
  const load = proc?.getBuiltinModule;
  return typeof load === "function" ? (load(name) as T) : null;
}

export const inNode = (): boolean =>
  typeof (globalThis as { process?: NodeProcess }).process?.versions?.node === "string";
