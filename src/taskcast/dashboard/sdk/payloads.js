/** The payloads of a task's events (pure), exactly as the Python ``task/events.py``
 * builds them, so a TypeScript agent's events read like a Python Task's everywhere
 * (summaries, the dashboard, OpenTelemetry, AG-UI). */
export const MAX_SUMMARY = 200;
export const MAX_OUTPUT = 2000;
export const MAX_APPROVAL_ARGUMENTS = 512 * 1024;
export function truncate(text, limit) {
    return text.length <= limit ? text : text.slice(0, limit - 1) + "…";
}
/** ``key="value", n=3`` — strings quoted, others as JSON, each cut to ``valueLimit``. */
export function summarizeArguments(args, valueLimit = 80) {
    const parts = Object.entries(args).map(([key, value]) => {
        const shown = typeof value === "string" ? JSON.stringify(truncate(value, valueLimit)) : truncate(JSON.stringify(value) ?? "null", valueLimit);
        return `${key}=${shown}`;
    });
    return truncate(parts.join(", "), MAX_SUMMARY);
}
/** A model response as the seed's ``message``: its text, else its tool calls rendered
 * (``name(args)``), never empty. */
export function responseMessage(text, toolCalls = []) {
    if (text.trim())
        return text;
    if (toolCalls.length > 0) {
        return toolCalls.map((call) => `${call.name}(${summarizeArguments(call.arguments, 60)})`).join("; ");
    }
    return "(empty response)";
}
export function usagePayload(usage) {
    return {
        provider: usage.provider,
        model: usage.model,
        responseModel: usage.responseModel || usage.model,
        inputTokens: usage.inputTokens ?? 0,
        outputTokens: usage.outputTokens ?? 0,
        cachedTokens: usage.cachedTokens ?? 0,
        latencyMs: usage.latencyMs ?? null,
        finishReason: usage.finishReason ?? null,
    };
}
export function toolExecutedPayload(tool, args, output, options) {
    return {
        tool,
        arguments: summarizeArguments(args),
        success: options.success,
        approved: options.approved ?? true,
        durationMs: options.durationMs ?? 0,
        output: truncate(output, MAX_OUTPUT),
        truncated: output.length > MAX_OUTPUT,
    };
}
export function finalPayload(status, totals) {
    const payload = {
        turns: totals.turns,
        durationMs: totals.durationMs,
        inputTokens: totals.inputTokens,
        outputTokens: totals.outputTokens,
    };
    if (status === "completed")
        payload.result = truncate(totals.result ?? "", MAX_OUTPUT);
    else if (status === "failed")
        payload.error = truncate(totals.error ?? "", MAX_OUTPUT);
    return payload;
}
/** The full arguments for an approver, unless they would not fit in one event. */
export function approvalArguments(args) {
    if (JSON.stringify(args).length <= MAX_APPROVAL_ARGUMENTS)
        return { arguments: args };
    const share = Math.floor(MAX_APPROVAL_ARGUMENTS / Math.max(1, Object.keys(args).length));
    const cut = Object.fromEntries(Object.entries(args).map(([key, value]) => [key, typeof value === "string" ? truncate(value, share) : value]));
    return { arguments: cut, argumentsTruncated: true };
}
