/** Channel names and NATS-style patterns (pure), as the hub reads them: dot-separated
 * tokens of [A-Za-z0-9_-]; in a pattern `*` is one token and `>` the rest. */
const TOKEN = /^[A-Za-z0-9_-]+$/;
export const MAX_CHANNEL_LENGTH = 255;
export function isValidChannel(name) {
    return (typeof name === "string" &&
        name.length > 0 &&
        name.length <= MAX_CHANNEL_LENGTH &&
        name.split(".").every((token) => TOKEN.test(token)));
}
export function isValidPattern(pattern) {
    if (typeof pattern !== "string" || !pattern || pattern.length > MAX_CHANNEL_LENGTH)
        return false;
    const tokens = pattern.split(".");
    return tokens.every((token, index) => (token === ">" && index === tokens.length - 1) || token === "*" || TOKEN.test(token));
}
export function matches(pattern, channel) {
    const want = pattern.split(".");
    const have = channel.split(".");
    for (let i = 0; i < want.length; i++) {
        const token = want[i];
        if (token === ">")
            return have.length > i;
        if (i >= have.length)
            return false;
        if (token !== "*" && token !== have[i])
            return false;
    }
    return want.length === have.length;
}
export const taskChannel = (taskId) => `tasks.${taskId}`;
export const controlChannel = (taskId) => `control.${taskId}`;
