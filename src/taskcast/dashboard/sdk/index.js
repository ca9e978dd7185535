/**
 * taskcast for TypeScript and JavaScript (Node ≥ 20, browsers).
 *
 * - ``CommunicationService``: publish an agent's events — ``sendMessage(type, payload)``,
 *   synchronous and never throwing; outbox (memory or a file that survives kill -9), acks,
 *   reconnect and failover — a drop-in for ValorIDE's.
 * - ``subscribe``: follow a channel pattern as an async iterator, resumed after any drop.
 * - ``HubClient``: approve, deny, reply, say, abort; pending requests, tasks, events, history.
 * - ``TaskRecorder``: the events of a taskcast Task for an agent loop of your own.
 */
export * from "./vocabulary.js";
export { readFrame, isEvent } from "./frames.js";
export { CommunicationService, TaskcastError } from "./service.js";
export { subscribe } from "./subscribe.js";
export { HubClient, HubError, HubUnreachable, NoSingleRequest } from "./hub-client.js";
export { TaskRecorder } from "./recorder.js";
export { HistoryBuilder, HistoryGap, rebuildHistory } from "./history.js";
export { LogMismatch, ResumePoint } from "./resume.js";
export { Outbox } from "./outbox.js";
export { backoffDelay, DEFAULT_BACKOFF, HubRotation, httpBase, wsUrl } from "./backoff.js";
export { matches, isValidChannel, isValidPattern, taskChannel, controlChannel } from "./channels.js";
export { randomId } from "./ids.js";
export { RemoteControl, commandOf } from "./remote.js";
export { responseMessage, summarizeArguments } from "./payloads.js";
