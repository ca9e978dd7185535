/** Node's built-in modules, reached without an ``import`` statement so the same build
 * loads in browsers (``process.getBuiltinModule``, Node ≥ 20.16). */
export function nodeBuiltin(name) {
    const proc = globalThis.process;
    const load = proc?.getBuiltinModule;
    return typeof load === "function" ? load(name) : null;
}
export const inNode = () => typeof globalThis.process?.versions?.node === "string";
