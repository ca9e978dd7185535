/** What travels on the wire (pure): event and payload shapes, and reading hub frames. */

import type { CommandAction, ErrorCode, EventType, RequestKind, TaskStatus } from "./vocabulary.js";

/** The seed contract's payload: exactly these three keys by default. */
export interface ApiActionPayload {
  taskId: string;
  message: string;
  timestamp: number;
}

/** An event as the hub delivers it: as published, plus ``id``, ``seq``, ``channel``
 * (and ``source``, ``publisher`` — the authenticated sub that published it). */
export interface TaskcastEvent<P = Record<string, unknown>> {
  type: string;
  payload: P;
  id: string;
  seq: number;
  channel: string;
  source?: string;
  publisher?: string;
  [field: string]: unknown;
}

/** What ``sendMessage`` takes as one object. */
export interface OutgoingEvent {
  type: string;
  payload: Record<string, unknown>;
  /** The idempotency key (default: a new random 128-bit id). */
  id?: string;
  /** Default: ``tasks.<payload.taskId>``, or ``events`` without a taskId. */
  channel?: string;
  source?: string;
}

export interface AckFrame {
  type: "ack";
  id: string;
  seq: number;
  duplicate?: boolean;
}

export interface ErrorFrame {
  type: "error";
  code: ErrorCode | string;
  message: string;
  id?: string;
}

export interface SubscribedFrame {
  type: "subscribed";
  channel: string;
  head: number;
  logId?: string;
  recovered?: boolean;
  oldest?: number;
  ahead?: boolean;
}

export interface ToolCallRecord {
  id?: string;
  name: string;
  arguments: Record<string, unknown>;
}

/** The richer events a task publishes (Python's ``task/events.py`` writes the same). */
export interface TaskStartedPayload {
  taskId: string;
  prompt: string;
  provider: string;
  model: string;
  systemPrompt?: string | null;
  instance?: string | null;
  agent?: string;
  timestamp: number;
  [field: string]: unknown;
}

export interface LlmUsagePayload {
  taskId: string;
  provider: string;
  model: string;
  responseModel: string;
  inputTokens: number;
  outputTokens: number;
  cachedTokens: number;
  latencyMs: number | null;
  finishReason: string | null;
  timestamp: number;
}

export interface ToolExecutedPayload {
  taskId: string;
  tool: string;
  arguments: string;
  success: boolean;
  approved: boolean;
  durationMs: number;
  output: string;
  truncated: boolean;
  timestamp: number;
}

export interface HistoryAppendedPayload {
  taskId: string;
  index: number;
  message?: Record<string, unknown>;
  chunk?: number;
  chunks?: number;
  data?: string;
  timestamp: number;
}

export interface TaskEndedPayload {
  taskId: string;
  turns: number;
  durationMs: number;
  inputTokens: number;
  outputTokens: number;
  result?: string;
  error?: string;
  by?: string;
  reason?: string | null;
  timestamp: number;
}

export interface RunnerLostPayload {
  taskId: string;
  holder: string;
  lastSeq: number;
  leaseExpiredAt: number;
  timestamp: number;
}

export interface CommandPayload {
  taskId: string;
  action: CommandAction;
  requestId?: string;
  text?: string;
  reason?: string;
}

/** An open approval request or question (``GET /api/pending``). */
export interface PendingRequest {
  taskId: string;
  requestId: string;
  kind: RequestKind;
  seq: number;
  requestedAt: number;
  tool?: string;
  summary?: string;
  question?: string;
  arguments?: Record<string, unknown>;
  options?: string[];
  [field: string]: unknown;
}

/** A task's summary (``GET /api/tasks``). */
export interface TaskSummary {
  taskId: string;
  channel: string;
  status: TaskStatus;
  apiActions: number;
  toolCalls: number;
  toolFailures: number;
  toolDenials: number;
  inputTokens: number;
  outputTokens: number;
  cachedTokens: number;
  events: number;
  firstSeq: number;
  lastSeq: number;
  startedAt: number;
  lastActivity: number;
  endedAt: number | null;
  durationMs: number;
  provider: string | null;
  model: string | null;
  source: string | null;
  prompt: string | null;
  result: string | null;
  error: string | null;
  pending: number;
}

export type KnownEventType = EventType;

/** A frame from the hub as an object, or null for anything that is not a JSON object
 * (a garbage frame never throws into the caller). */
export function readFrame(data: unknown): Record<string, unknown> | null {
  let text: string;
  if (typeof data === "string") text = data;
  else if (data instanceof ArrayBuffer) text = new TextDecoder().decode(data);
  else if (ArrayBuffer.isView(data)) text = new TextDecoder().decode(data as Uint8Array);
  else return null;
  try {
    const value: unknown = JSON.parse(text);
    return value !== null && typeof value === "object" && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : null;
  } catch {
    return null;
  }
}

/** A delivered event: a frame with an integer ``seq`` that is not a reply. */
export function isEvent(frame: Record<string, unknown>): frame is TaskcastEvent {
  return (
    Number.isInteger(frame.seq) &&
    typeof frame.type === "string" &&
    frame.type !== "ack" &&
    frame.type !== "subscribed" &&
    frame.type !== "error"
  );
}
