/**
 * ``TaskRecorder``: the events of a taskcast ``Task`` for an agent loop of your own —
 * the same events and payloads as the Python ``TaskRecorder``: ``task_started``, the
 * seed-exact ``api_action`` after every successful model response, ``llm_usage``,
 * ``tool_executed``, ``task_completed`` / ``task_failed``; and ``requestApproval()`` /
 * ``ask()`` answered through the hub (``taskcast approve``, the dashboard's Needs-you
 * panel, ``HubClient``). Nothing here throws into the agent or blocks it.
 */
import { controlChannel } from "./channels.js";
import { randomId } from "./ids.js";
import { MAX_OUTPUT, approvalArguments, finalPayload, responseMessage, summarizeArguments, toolExecutedPayload, truncate, usagePayload, } from "./payloads.js";
import { RemoteControl, commandOf } from "./remote.js";
import { EventType, RemoteEvent, RequestKind } from "./vocabulary.js";
const NOBODY = "taskcast"; // ``by`` for a decision nobody made (a timeout)
export class TaskRecorder {
    taskId;
    provider;
    model;
    turns = 0;
    inputTokens = 0;
    outputTokens = 0;
    /** The task's result: the last response's text unless ``complete`` names one. */
    result = null;
    status = null;
    /** Set when someone sent ``abort`` through the hub. */
    abortedBy = null;
    service;
    onAbort;
    started = Date.now();
    control = null;
    waiting = new Map();
    onCommand = (frame) => this.applyCommand(frame);
    constructor(service, taskId, options = {}) {
        this.service = service;
        this.taskId = taskId ?? randomId();
        this.provider = options.provider ?? "unknown";
        this.model = options.model ?? "unknown";
        this.onAbort = options.onAbort;
    }
    // --- the task's life ---------------------------------------------------------------
    /** ``task_started`` (once); ``extra`` joins its payload (e.g. ``agent``). */
    start(prompt, extra = {}) {
        if (this.status !== null)
            return;
        this.status = "running";
        this.started = Date.now();
        this.emit(EventType.TASK_STARTED, {
            prompt: truncate(prompt ?? "", MAX_OUTPUT),
            provider: this.provider,
            model: this.model,
            systemPrompt: null,
            instance: null,
            ...extra,
        });
    }
    /** One successful model response: the seed-exact ``api_action`` — its message the
     * response text, or the rendered tool calls when there is no text. */
    apiAction(text = "", toolCalls = []) {
        this.start();
        this.turns += 1;
        if (text.trim())
            this.result = text;
        const payload = { taskId: this.taskId, message: responseMessage(text, toolCalls), timestamp: Date.now() };
        this.service.sendMessage({ type: EventType.API_ACTION, payload });
    }
    /** ``llm_usage`` for one model response. */
    usage(usage) {
        this.start();
        this.inputTokens += usage.inputTokens ?? 0;
        this.outputTokens += usage.outputTokens ?? 0;
        this.emit(EventType.LLM_USAGE, usagePayload({ ...usage, provider: usage.provider ?? this.provider, model: usage.model ?? this.model }));
    }
    /** ``tool_executed`` for one tool run (``success: false`` when it failed). */
    tool(name, args = {}, output = "", options = {}) {
        this.start();
        const text = typeof output === "string" ? output : JSON.stringify(output) ?? String(output);
        this.emit(EventType.TOOL_EXECUTED, toolExecutedPayload(name, args, text, { success: options.success ?? true, durationMs: options.durationMs, approved: options.approved }));
    }
    /** ``agent_handoff``: the conversation moves from one agent to another. */
    handoff(fromAgent, toAgent) {
        this.start();
        this.emit(EventType.AGENT_HANDOFF, { fromAgent, toAgent });
    }
    complete(result) {
        this.end("completed", { result: result ?? this.result ?? "" });
    }
    fail(error) {
        const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
        this.end("failed", { error: text });
    }
    // --- asking people through the hub ------------------------------------------------
    /** Publish ``approval_requested`` and wait for the first ``approve``/``deny`` sent to
     * the task; a timeout (default 10 min) denies. Needs a ``CommunicationService``. */
    async requestApproval(tool, args = {}, options = {}) {
        const details = { tool, ...approvalArguments(args), summary: summarizeArguments(args) };
        const outcome = await this.ask_(RequestKind.APPROVAL, details, options.timeoutMs);
        return { approved: outcome.approved === true, by: outcome.by, reason: outcome.reason };
    }
    /** Publish ``question_asked`` and wait for a ``reply``; null on timeout. */
    async ask(question, options = {}) {
        const details = { question };
        if (options.options?.length)
            details.options = options.options;
        const outcome = await this.ask_(RequestKind.QUESTION, details, options.timeoutMs);
        return outcome.answer ?? null;
    }
    ask_(kind, details, timeoutMs = 600_000) {
        this.start();
        const control = this.followControl();
        const requestId = randomId();
        control.open(requestId, kind, details);
        const event = kind === RequestKind.APPROVAL ? RemoteEvent.APPROVAL_REQUESTED : RemoteEvent.QUESTION_ASKED;
        this.emit(event, { requestId, ...details });
        return new Promise((resolve) => {
            const timer = setTimeout(() => {
                if (!this.waiting.delete(requestId))
                    return;
                control.settle(requestId);
                if (kind === RequestKind.APPROVAL) {
                    this.emit(RemoteEvent.APPROVAL_RESOLVED, { requestId, decision: "deny", by: NOBODY, reason: "timeout" });
                    resolve({ approved: false, by: NOBODY, reason: "timeout" });
                }
                else {
                    this.emit(RemoteEvent.QUESTION_ANSWERED, { requestId, answer: null, by: NOBODY, reason: "timeout" });
                    resolve({ answer: null, by: NOBODY, reason: "timeout" });
                }
            }, timeoutMs);
            this.waiting.set(requestId, (decision) => {
                clearTimeout(timer);
                resolve(decision);
            });
        });
    }
    followControl() {
        if (this.control !== null)
            return this.control;
        const service = this.service;
        if (service.follow === undefined || service.on === undefined) {
            throw new TypeError("taskcast: asking through the hub needs a CommunicationService");
        }
        this.control = new RemoteControl();
        service.on("message", this.onCommand);
        service.follow(controlChannel(this.taskId), 0);
        return this.control;
    }
    applyCommand(frame) {
        const control = this.control;
        if (control === null || frame.channel !== controlChannel(this.taskId))
            return;
        const command = commandOf(frame);
        if (command === null)
            return;
        const decision = control.apply(command);
        if (decision === null)
            return;
        if (decision.eventType !== null)
            this.emit(decision.eventType, decision.payload);
        if (decision.abort) {
            this.abortedBy = command.by;
            try {
                this.onAbort?.(command.by, command.reason ?? null);
            }
            catch {
                // the agent's callback must not break the link
            }
        }
        if (decision.resolves !== undefined) {
            const wake = this.waiting.get(decision.resolves);
            this.waiting.delete(decision.resolves);
            wake?.({ approved: decision.approved, answer: decision.answer, by: command.by, reason: command.reason ?? null });
        }
    }
    end(status, text) {
        if (this.status === "completed" || this.status === "failed")
            return;
        this.start();
        this.status = status;
        if (this.control !== null) {
            this.control.ended = true;
            this.service.unfollow?.(controlChannel(this.taskId));
            this.service.off?.("message", this.onCommand);
        }
        const payload = finalPayload(status, {
            turns: this.turns,
            durationMs: Date.now() - this.started,
            inputTokens: this.inputTokens,
            outputTokens: this.outputTokens,
            ...text,
        });
        this.emit(status === "completed" ? EventType.TASK_COMPLETED : EventType.TASK_FAILED, payload);
    }
    emit(type, payload) {
        this.service.sendMessage({ type, payload: { taskId: this.taskId, ...payload, timestamp: Date.now() } });
    }
}
