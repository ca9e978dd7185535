// The TypeScript client's side of bench/clients.py: one run of one scenario, its figures
// as one JSON line. node ts_client.mjs <publish|subscribe> <hub-url> <events> <task>
import { CommunicationService, subscribe } from "../../clients/typescript/dist/index.js";

const [scenario, url, count, task] = process.argv.slice(2);
const events = Number(count);
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };

if (scenario === "publish") {
  const service = new CommunicationService(url);
  await new Promise((done) => service.once("status", (s) => s === "open" && done()));
  const cpuBefore = cpu();
  const costs = new Float64Array(events);
  const started = process.hrtime.bigint();
  for (let i = 0; i < events; i++) {
    const t0 = process.hrtime.bigint();
    service.sendMessage("api_action", { taskId: task, message: `event ${i} of the bench`, timestamp: Date.now() });
    costs[i] = Number(process.hrtime.bigint() - t0) / 1000;
    if (i % 1000 === 999) await new Promise((done) => setImmediate(done)); // let the socket write
  }
  const flushed = await service.flush(120_000);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  costs.sort();
  console.log(JSON.stringify({
    flushed, acked_per_s: events / seconds, client_cpu: cpu() - cpuBefore,
    send_p50_us: costs[Math.floor(events * 0.5)], send_p99_us: costs[Math.floor(events * 0.99)],
  }));
  await service.close(1000);
} else {
  const cpuBefore = cpu();
  const started = process.hrtime.bigint();
  let got = 0;
  for await (const _ of subscribe(url, `tasks.${task}`, { since: 0 })) if (++got === events) break;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(JSON.stringify({ received: got, events_per_s: got / seconds, client_cpu: cpu() - cpuBefore }));
}
process.exit(0);
