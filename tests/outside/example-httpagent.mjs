// docs/ag-ui.md's example, run by tests/outside/agui.test.mjs as it is written:
// follow a taskcast task with AG-UI's official client, answering its approvals.
//   node example-httpagent.mjs http://127.0.0.1:8765 TASK_ID [TOKEN]
import { HttpAgent, buildResumeArray } from "@ag-ui/client";

const [hub, taskId, token] = process.argv.slice(2);
const agent = new HttpAgent({
  url: `${hub}/ag-ui/tasks/${taskId}`,
  threadId: taskId, // a thread is a task
  headers: token ? { Authorization: `Bearer ${token}` } : {},
});

const show = {
  onTextMessageEndEvent: ({ textMessageBuffer }) => console.log(`assistant: ${textMessageBuffer}`),
  onToolCallEndEvent: ({ toolCallName, toolCallArgs }) => console.log(`tool: ${toolCallName} ${JSON.stringify(toolCallArgs)}`),
  onRunFinishedEvent: ({ outcome }) => console.log(`finished: ${outcome?.type ?? "success"}`),
  onRunErrorEvent: ({ event }) => console.log(`error: ${event.message}`),
};

await agent.runAgent({}, show);
// While the task waits for a person, the run ends with interrupts: approve them all here
// (a real UI asks the user), and the next run goes on from where the task is.
while (agent.pendingInterrupts.length > 0) {
  const answers = Object.fromEntries(
    agent.pendingInterrupts.map((i) => [i.id, { status: "resolved", payload: { approved: true } }]),
  );
  await agent.runAgent({ resume: buildResumeArray(agent.pendingInterrupts, answers) }, show);
}
for (const message of agent.messages) console.log(`${message.role}: ${message.content ?? ""}`);
