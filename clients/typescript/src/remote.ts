/**
 * Remote orchestration, the task's side (pure): what a delivered ``task_command`` does —
 * first decision wins, each command applied once, and which event answers it. The same
 * state machine as the Python ``taskcast/task/remote.py``.
 */

import type { TaskcastEvent } from "./frames.js";
import { COMMAND_TYPE, CommandAction, Rejection, RemoteEvent, RequestKind } from "./vocabulary.js";

export interface Command {
  eventId: string;
  seq: number;
  action: CommandAction;
  /** Who sent it: the hub-recorded publisher. */
  by: string;
  requestId?: string;
  text?: string;
  reason?: string;
}

const ACTIONS: ReadonlySet<string> = new Set(Object.values(CommandAction));

/** The command in a delivered frame, or null if it is not a valid one. */
export function commandOf(frame: TaskcastEvent): Command | null {
  const payload = frame.payload as Record<string, unknown> | null;
  if (frame.type !== COMMAND_TYPE || payload === null || typeof payload !== "object") return null;
  const action = payload.action;
  if (typeof action !== "string" || !ACTIONS.has(action)) return null;
  const text = (key: string): string | undefined => (typeof payload[key] === "string" ? (payload[key] as string) : undefined);
  return {
    eventId: String(frame.id ?? ""),
    seq: Number.isInteger(frame.seq) ? frame.seq : 0,
    action: action as CommandAction,
    by: String(frame.publisher ?? "anonymous"),
    requestId: text("requestId"),
    text: text("text"),
    reason: text("reason"),
  };
}

export interface Decision {
  /** The event that answers the command (null: none, e.g. an abort). */
  eventType: RemoteEvent | null;
  payload: Record<string, unknown>;
  resolves?: string;
  approved?: boolean;
  answer?: string;
  abort?: boolean;
  message?: string;
}

export class RemoteControl {
  readonly pending = new Map<string, { kind: RequestKind; details: Record<string, unknown> }>();
  private readonly resolved = new Set<string>();
  private readonly applied = new Set<string>();
  lastSeq = 0;
  ended = false;

  open(requestId: string, kind: RequestKind, details: Record<string, unknown>): void {
    this.pending.set(requestId, { kind, details });
  }

  /** A request settled here (a timeout). */
  settle(requestId: string): void {
    if (this.pending.delete(requestId)) this.resolved.add(requestId);
  }

  /** Decide a command; null when this command was already applied. */
  apply(command: Command): Decision | null {
    if (this.applied.has(command.eventId)) return null;
    this.applied.add(command.eventId);
    this.lastSeq = Math.max(this.lastSeq, command.seq);
    if (this.ended) return rejected(command, Rejection.TASK_ENDED);
    if (command.action === CommandAction.ABORT) return { eventType: null, payload: {}, abort: true };
    if (command.action === CommandAction.MESSAGE) {
      const text = command.text ?? "";
      return { eventType: RemoteEvent.USER_MESSAGE, payload: { text, by: command.by }, message: text };
    }
    const requestId = command.requestId ?? "";
    const request = this.pending.get(requestId);
    if (request === undefined) {
      return rejected(command, this.resolved.has(requestId) ? Rejection.ALREADY_RESOLVED : Rejection.UNKNOWN_REQUEST);
    }
    if (command.action === CommandAction.REPLY) {
      if (request.kind !== RequestKind.QUESTION) return rejected(command, Rejection.WRONG_KIND);
      this.settle(requestId);
      return {
        eventType: RemoteEvent.QUESTION_ANSWERED,
        payload: { requestId, answer: command.text ?? null, by: command.by },
        resolves: requestId,
        answer: command.text ?? "",
      };
    }
    if (request.kind !== RequestKind.APPROVAL) return rejected(command, Rejection.WRONG_KIND);
    this.settle(requestId);
    return {
      eventType: RemoteEvent.APPROVAL_RESOLVED,
      payload: { requestId, decision: command.action, by: command.by, reason: command.reason ?? null },
      resolves: requestId,
      approved: command.action === CommandAction.APPROVE,
    };
  }
}

function rejected(command: Command, reason: Rejection): Decision {
  return {
    eventType: RemoteEvent.COMMAND_REJECTED,
    payload: {
      action: command.action,
      requestId: command.requestId ?? null,
      commandId: command.eventId,
      by: command.by,
      reason,
    },
  };
}
