/** What travels on the wire (pure): event and payload shapes, and reading hub frames. */
/** A frame from the hub as an object, or null for anything that is not a JSON object
 * (a garbage frame never throws into the caller). */
export function readFrame(data) {
    let text;
    if (typeof data === "string")
        text = data;
    else if (data instanceof ArrayBuffer)
        text = new TextDecoder().decode(data);
    else if (ArrayBuffer.isView(data))
        text = new TextDecoder().decode(data);
    else
        return null;
    try {
        const value = JSON.parse(text);
        return value !== null && typeof value === "object" && !Array.isArray(value)
            ? value
            : null;
    }
    catch {
        return null;
    }
}
/** A delivered event: a frame with an integer ``seq`` that is not a reply. */
export function isEvent(frame) {
    return (Number.isInteger(frame.seq) &&
        typeof frame.type === "string" &&
        frame.type !== "ack" &&
        frame.type !== "subscribed" &&
        frame.type !== "error");
}
