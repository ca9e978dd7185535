/**
 * Remote orchestration, the task's side (pure): what a delivered ``task_command`` does —
 * first decision wins, each command applied once, and which event answers it. The same
 * state machine as the Python ``taskcast/task/remote.py``.
 */
import { COMMAND_TYPE, CommandAction, Rejection, RemoteEvent, RequestKind } from "./vocabulary.js";
const ACTIONS = new Set(Object.values(CommandAction));
/** The command in a delivered frame, or null if it is not a valid one. */
export function commandOf(frame) {
    const payload = frame.payload;
    if (frame.type !== COMMAND_TYPE || payload === null || typeof payload !== "object")
        return null;
    const action = payload.action;
    if (typeof action !== "string" || !ACTIONS.has(action))
        return null;
    const text = (key) => (typeof payload[key] === "string" ? payload[key] : undefined);
    return {
        eventId: String(frame.id ?? ""),
        seq: Number.isInteger(frame.seq) ? frame.seq : 0,
        action: action,
        by: String(frame.publisher ?? "anonymous"),
        requestId: text("requestId"),
        text: text("text"),
        reason: text("reason"),
    };
}
export class RemoteControl {
    pending = new Map();
    resolved = new Set();
    applied = new Set();
    lastSeq = 0;
    ended = false;
    open(requestId, kind, details) {
        this.pending.set(requestId, { kind, details });
    }
    /** A request settled here (a timeout). */
    settle(requestId) {
        if (this.pending.delete(requestId))
            this.resolved.add(requestId);
    }
    /** Decide a command; null when this command was already applied. */
    apply(command) {
        if (this.applied.has(command.eventId))
            return null;
        this.applied.add(command.eventId);
        this.lastSeq = Math.max(this.lastSeq, command.seq);
        if (this.ended)
            return rejected(command, Rejection.TASK_ENDED);
        if (command.action === CommandAction.ABORT)
            return { eventType: null, payload: {}, abort: true };
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
            if (request.kind !== RequestKind.QUESTION)
                return rejected(command, Rejection.WRONG_KIND);
            this.settle(requestId);
            return {
                eventType: RemoteEvent.QUESTION_ANSWERED,
                payload: { requestId, answer: command.text ?? null, by: command.by },
                resolves: requestId,
                answer: command.text ?? "",
            };
        }
        if (request.kind !== RequestKind.APPROVAL)
            return rejected(command, Rejection.WRONG_KIND);
        this.settle(requestId);
        return {
            eventType: RemoteEvent.APPROVAL_RESOLVED,
            payload: { requestId, decision: command.action, by: command.by, reason: command.reason ?? null },
            resolves: requestId,
            approved: command.action === CommandAction.APPROVE,
        };
    }
}
function rejected(command, reason) {
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
