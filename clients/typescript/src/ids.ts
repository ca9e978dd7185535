/**
 * Event ids: 44 hex digits, as the Python client makes them — a 48-bit millisecond
 * timestamp (new ids stay near the end of the log's unique index), then 128 random bits
 * from the platform's CSPRNG (nobody can guess, and so take first, the next id).
 * Random bytes are drawn 4 KiB at a time: one ``getRandomValues`` per call was a third of
 * ``sendMessage``'s cost.
 */

const HEX = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"));
const pool = new Uint8Array(4096);
let position = pool.length;

export function randomId(): string {
  if (position + 16 > pool.length) {
    globalThis.crypto.getRandomValues(pool);
    position = 0;
  }
  let hex = (Date.now() % 2 ** 48).toString(16).padStart(12, "0");
  for (let i = position; i < position + 16; i++) hex += HEX[pool[i] as number];
  position += 16;
  return hex;
}
