"""How cost grows with subscribers: ``python bench/scale.py`` (part of ``make bench``).

``--shape hot`` (the default): one hot channel, subscribers at each size (100, 1,000,
10,000, 50,000 by default):
- throughput: one publisher as fast as the server takes it; deliveries/s, and the
  server's CPU per delivery;
- steady: the same work at every size — a paced publisher, 100,000 deliveries/s in all
  (``--steady-rate``), so more subscribers means fewer events — and the server's CPU
  per delivery: how cost grows with subscribers when the work does not (the target:
  flat within 1.5 times from 1,000 to 50,000), free of what saturation adds (queues
  in the kernel, writes batched or not);
- latency: a paced publisher (20,000 deliveries/s in all, at least 1 event/s, so more
  subscribers means fewer events) and p50/p99 publish→deliver;
- memory: the server's RSS per connected subscriber.

``--shape tasks``: as many tasks as subscribers, each subscriber following its own
task (``tasks.t<n>``), every task publishing 1 event/s for 10 s — the dashboards-per-
agent shape. Deliveries/s equal events/s; p50/p99 publish→deliver, CPU per delivery,
and whether the hub kept the pace. The Node relay is left out (it broadcasts, no
routing).

Servers: taskcast as one process on SQLite, taskcast ``--workers 4`` over NATS
JetStream (the only way past one process's 20,000 open files), a Node ``ws`` relay
and a NATS server (Go, websocket) — each at the sizes it can hold. Subscribers are
spread over several load-generator processes, each connecting from its own
127.0.0.x address. Prints a table, draws the curves into docs/scale-*.png and writes
its section into docs/benchmarks.md. ``--profile DIR`` records each hot throughput
point with Linux ``perf`` and prints where each delivery's CPU goes (perf_profile.py).
``--events N`` publishes N events at every hot throughput point: with many, the
subscribers fall behind and stay behind, the load a hub must take without its cost
per delivery growing.
``--rounds N`` runs every hot throughput and steady point N times, round after round,
and reports each point's median round and the cost growth from 1,000 subscribers to
the largest size, by the medians and round by round (the host drifts: one run is not
enough to tell 1.4 times from 2 times).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.nats_servers import NatsServer, jetstream_ready

from loadgen import (
    cpu_split_of,
    page_reporting,
    rss_bytes_of,
    start_publishers,
    start_subscribers,
    tcp_counters,
    tcp_memory_limits,
    tcp_memory_pages,
)
from perf_profile import Recording, breakdown
from report import write_section
from servers import REPO, Server, _start, ensure_node_modules, nats_websocket, node_ws, taskcast

PAGE = os.sysconf("SC_PAGE_SIZE")
PER_PROCESS = 8_400  # subscribers per load-generator process
LATENCY_DELIVERIES = 20_000
LATENCY_SECONDS = 5
STEADY_DELIVERIES = 100_000  # --steady-rate's default
STEADY_SECONDS = 10
Mode = Literal["throughput", "steady", "latency"]
TASK_SECONDS = 10  # --shape tasks: each task publishes 1 event/s for this long
FD_LIMIT = 20_000  # one process's open files on this machine (hard limit)
Result = dict[str, Any]


class Target:
    """A server under test: its URL, its processes (CPU, memory) and how many it holds."""

    def __init__(self, name: str, servers: list[Server], capacity: int, extra: Any = None):
        self.name = name
        self.servers = servers
        self.capacity = capacity
        self.extra = extra

    @property
    def url(self) -> str:
        return self.servers[0].url

    @property
    def mode(self) -> str:
        return self.servers[0].mode

    def pids(self) -> list[int]:
        pids = [server.process.pid for server in self.servers]
        for pid in list(pids):  # --workers: the supervisor's children do the work
            children = Path(f"/proc/{pid}/task/{pid}/children")
            if children.exists():
                pids += [int(child) for child in children.read_text().split()]
        return pids

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        if self.extra is not None:
            self.extra.stop()


def taskcast_workers(workers: int) -> Target:
    root = Path(tempfile.mkdtemp(prefix="taskcast-scale-"))
    (root / "js").mkdir()
    nats = NatsServer("scale", root / "js").start()
    jetstream_ready(nats.url)
    server = _start(
        f"taskcast --workers {workers} (NATS)",
        "taskcast",
        [
            sys.executable,
            "-m",
            "taskcast",
            "hub",
            "--port",
            "0",
            "--store",
            nats.url,
            "--workers",
            str(workers),
            "--max-connections",
            "19000",
            "--publish-rate",
            "0",
            "--max-connections-per-ip",
            "0",
            "--retain-events",
            "1000000",
        ],
    )
    return Target(f"taskcast --workers {workers} (NATS)", [server], workers * 19_000, nats)


def load_generators(subscribers: int) -> tuple[int, int]:
    """How many load-generator processes hold ``subscribers``, and how many each (the
    remainder is dropped: every process holds the same number)."""
    processes = max(2, -(-subscribers // PER_PROCESS))
    return processes, subscribers // processes


def run_point(
    target: Target,
    subscribers: int,
    mode: Mode,
    *,
    profile: Path | None = None,
    throughput_events: int | None = None,
    steady_rate: int = STEADY_DELIVERIES,
) -> Result:
    """One hot channel: throughput (``throughput_events`` events, by default enough for
    2,000,000 deliveries), steady (paced at ``steady_rate`` deliveries/s in all for
    STEADY_SECONDS) or latency (paced at LATENCY_DELIVERIES/s for LATENCY_SECONDS)."""
    processes, per_process = load_generators(subscribers)
    total = processes * per_process
    rate: float | None = None
    if mode == "throughput":
        # 2,000,000 deliveries, but at least 200 events — with 40 events to 50,000
        # subscribers a pass would hold too few events to compare cost per delivery.
        events = throughput_events or max(200, 2_000_000 // total)
    else:
        # Latency: light enough that the Python load generators are not what is
        # measured. Both: at least 1 event/s.
        per_second = LATENCY_DELIVERIES if mode == "latency" else steady_rate
        seconds = LATENCY_SECONDS if mode == "latency" else STEADY_SECONDS
        rate = max(1.0, per_second / total)
        events = max(5, int(rate * seconds))
    result = drive(
        target,
        subscribers,
        per_subscriber=events,
        events=events,
        rate=rate,
        latency=mode == "latency",
        profile=profile,
    )
    return {
        **result,
        "mode": mode,
        "expected": events * total,
        "rate": rate,
        "target_per_s": None if rate is None else rate * total,
    }


def run_tasks_point(target: Target, tasks: int) -> Result:
    """``tasks`` subscribers, each following its own task; 1 event/s per task."""
    processes, per_process = load_generators(tasks)
    total = processes * per_process
    events = total * TASK_SECONDS
    result = drive(
        target,
        tasks,
        per_subscriber=TASK_SECONDS,
        events=events,
        rate=float(total),
        latency=True,
        tasks=total,
    )
    return {**result, "expected": events, "target_per_s": float(total)}


def drive(
    target: Target,
    subscribers: int,
    *,
    per_subscriber: int,
    events: int,
    rate: float | None,
    latency: bool,
    tasks: int = 0,
    profile: Path | None = None,
) -> Result:
    """Connect the subscribers (over several processes and source addresses), publish
    ``events`` (as fast as taken, or at ``rate``/s; over ``tasks`` tasks, each
    subscriber then following one), and measure what arrived, when, and at what CPU
    and memory; with ``latency``, publish→deliver of every event too (the load
    generators decode each frame). ``profile``: a perf recording of the server's
    processes while the events flow, to that file."""
    go = mp.get_context("spawn").Event()
    processes, per_process = load_generators(subscribers)
    total = per_process * processes
    rss_before = sum(rss_bytes_of(pid) for pid in target.pids())
    started = time.monotonic()
    subs = start_subscribers(
        target.url,
        target.mode,
        go,
        processes=processes,
        per_process=per_process,
        events=per_subscriber,
        latency=latency,
        timeout=240.0,
        ready_timeout=600.0,
        own_addresses=True,
        one_task_each=bool(tasks),
        release=True,
    )
    connect_seconds = time.monotonic() - started
    time.sleep(1.0)
    rss_after = sum(rss_bytes_of(pid) for pid in target.pids())
    publisher = start_publishers(target.url, target.mode, events, go, rate=rate, tasks=tasks)
    tcp_before = tcp_counters()
    watch = TcpMemoryWatch()
    recording = Recording(target.pids(), profile) if profile is not None else None
    cpu_before = [cpu_split_of(pid) for pid in target.pids()]
    go.set()
    (published,) = publisher.outcomes(timeout=600)
    received = subs.outcomes(timeout=600)
    cpu_after = [cpu_split_of(pid) for pid in target.pids()]
    if recording is not None:
        recording.stop()
    tcp_peak_pages = watch.stop()
    tcp_after = tcp_counters()
    publisher.release()
    subs.release()  # the subscribers disconnect now, after the CPU was read
    user = sum(u for u, _ in cpu_after) - sum(u for u, _ in cpu_before)
    system = sum(s for _, s in cpu_after) - sum(s for _, s in cpu_before)
    delivered = sum(r.count for r in received)
    elapsed = (max(r.last_ns for r in received) - published["start_ns"]) / 1e9
    latencies = sorted(x for r in received for x in r.latencies_us)

    def per_delivery(cpu_seconds: float) -> float:
        return cpu_seconds / delivered * 1e6 if delivered else float("nan")

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] / 1000

    return {
        "subscribers": total,
        "connected": sum(r.connected for r in received),
        "delivered": delivered,
        "deliveries_per_s": delivered / elapsed if elapsed > 0 else 0.0,
        "us_per_delivery": per_delivery(user + system),
        "user_us_per_delivery": per_delivery(user),
        "system_us_per_delivery": per_delivery(system),
        "tcp_peak_mib": tcp_peak_pages * PAGE / 2**20,
        **{f"tcp_{key}": tcp_after[key] - tcp_before[key] for key in tcp_after},
        "kib_per_connection": (rss_after - rss_before) / 1024 / max(1, total),
        "connect_seconds": connect_seconds,
        "p50_ms": pct(0.50) if latencies else float("nan"),
        "p99_ms": pct(0.99) if latencies else float("nan"),
    }


class TcpMemoryWatch:
    """The peak of the host's TCP socket memory while a point runs (sampled every 0.2 s
    from a thread): with the load generators on the same host, their unread receive
    queues count against the same kernel limit (net.ipv4.tcp_mem) as the server's."""

    def __init__(self) -> None:
        self.peak = tcp_memory_pages()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(0.2):
            self.peak = max(self.peak, tcp_memory_pages())

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        return self.peak


def tasks_section(rows: list[tuple[str, Result]], skipped: list[str], docs: Path) -> str:
    plot(rows, "p99_ms", "p99 publish→deliver (ms)", docs / "scale-tasks-p99.png", "tasks")
    plot(
        rows,
        "us_per_delivery",
        "server CPU µs per delivery",
        docs / "scale-tasks-cost.png",
        "tasks",
    )
    lines = [
        "## Scale: many tasks at 1 event/s each — `python bench/scale.py --shape tasks`",
        "",
        f"As many tasks as subscribers; each subscriber follows its own task "
        f"(`tasks.t<n>`), each task publishes 1 event/s for {TASK_SECONDS} s through one "
        "publisher connection, so events/s = deliveries/s = tasks. One run. taskcast "
        "commits every event before delivering it. The Node relay is not in this table: "
        "it broadcasts every frame to every client (no routing).",
        "",
        "| server | tasks = subscribers | target deliveries/s | achieved deliveries/s "
        "| server CPU µs per delivery | p50 ms | p99 ms | connect s | delivered |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['subscribers']:,} | {r['target_per_s']:,.0f} "
            f"| {r['deliveries_per_s']:,.0f} | {r['us_per_delivery']:.2f} "
            f"| {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['connect_seconds']:.0f} "
            f"| {r['delivered']:,}/{r['expected']:,} |"
        )
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped) + "."]
    lines += [
        "",
        "![p99 latency](scale-tasks-p99.png)",
        "![CPU per delivery](scale-tasks-cost.png)",
    ]
    return "\n".join(lines)


def plot(rows: list[tuple[str, Result]], key: str, ylabel: str, path: Path, x: str = "hot") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for name in dict.fromkeys(name for name, _ in rows):
        points = sorted((r["subscribers"], r[key]) for n, r in rows if n == name)
        axes.plot([x for x, _ in points], [y for _, y in points], marker="o", label=name)
    axes.set_xscale("log")
    axes.set_xlabel(
        "subscribers (one hot channel)" if x == "hot" else "tasks, 1 subscriber and 1 event/s each"
    )
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def positive_count(text: str) -> int:
    """One positive count: ``--events``, and each of ``--sizes``."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"not a positive count: {text!r}")
    return count


def subscriber_counts(text: str) -> list[int]:
    """``--sizes``: comma-separated positive counts."""
    try:
        return [positive_count(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"not a list of positive counts: {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes", type=subscriber_counts, default=subscriber_counts("100,1000,10000,50000")
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--peers", default="taskcast,taskcast-workers,node-ws,nats")
    parser.add_argument("--shape", choices=("hot", "tasks"), default="hot")
    parser.add_argument(
        "--events",
        type=positive_count,
        metavar="N",
        help="hot throughput points publish N events at every size (default: enough for "
        "2,000,000 deliveries, at least 200)",
    )
    parser.add_argument(
        "--rounds",
        type=positive_count,
        default=1,
        metavar="N",
        help="hot shape: run every throughput and steady point N times, round after "
        "round, and report each point's median round (default 1)",
    )
    parser.add_argument(
        "--steady-rate",
        type=positive_count,
        metavar="N",
        help="hot steady points: deliveries/s in all, the same at every size (default "
        f"{STEADY_DELIVERIES:,})",
    )
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record each hot throughput point with Linux perf into DIR and print where "
        "each delivery's CPU goes (kernel and user, busiest symbols)",
    )
    args = parser.parse_args()
    if args.shape == "tasks" and args.rounds > 1:
        parser.error("--rounds applies to the hot shape only")
    if args.shape == "tasks" and args.steady_rate is not None:
        parser.error("--steady-rate applies to the hot shape only")
    args.steady_rate = args.steady_rate or STEADY_DELIVERIES
    if args.profile is not None:
        if args.profile.exists() and not args.profile.is_dir():
            parser.error(f"--profile: {args.profile} is not a directory")
        args.profile.mkdir(parents=True, exist_ok=True)
    sizes: list[int] = args.sizes
    makers: dict[str, Callable[[], Target]] = {
        "taskcast": lambda: Target(
            "taskcast (SQLite, 1 process)",
            [taskcast(None, "--max-connections", "19000")],
            FD_LIMIT - 300,
        ),
        "taskcast-workers": lambda: taskcast_workers(args.workers),
        "node-ws": lambda: Target("Node ws relay", [node_ws()], FD_LIMIT - 100),
        "nats": lambda: Target("NATS server (Go, websocket)", [nats_websocket()], FD_LIMIT - 100),
    }
    wanted = [name for name in args.peers.split(",") if name]
    if args.shape == "tasks":
        wanted = [name for name in wanted if name != "node-ws"]  # a broadcast relay
    if "node-ws" in wanted:
        ensure_node_modules()
    if args.shape == "tasks":
        rows, skipped = run_tasks_shape(makers, wanted, sizes)
        section = tasks_section(rows, skipped, args.output.parent)
        print(section)
        write_section(args.output, "scale-tasks", section)
        return
    reporting_before = page_reporting()
    points, skipped = run_hot_shape(makers, wanted, sizes, args)
    reporting_after = page_reporting()
    handed_back = None
    if reporting_before is not None and reporting_after is not None:
        handed_back = (reporting_after[0], (reporting_after[1] - reporting_before[1]) / 2**20)
    section = hot_section(
        points, skipped, args.rounds, args.steady_rate, args.output.parent, handed_back
    )
    print(section)
    write_section(args.output, "scale", section)


def run_tasks_shape(
    makers: dict[str, Callable[[], Target]], wanted: list[str], sizes: list[int]
) -> tuple[list[tuple[str, Result]], list[str]]:
    rows: list[tuple[str, Result]] = []
    skipped: list[str] = []
    for name in wanted:
        for size in sizes:
            target = makers[name]()
            try:
                if size > target.capacity:
                    skipped.append(too_many(target, size))
                    continue
                result = run_tasks_point(target, size)
                rows.append((target.name, result))
                print(
                    f"{target.name:34s} {size:>6,} tasks "
                    f"{result['deliveries_per_s']:>9,.0f}/s of {result['target_per_s']:,.0f}  "
                    f"{result['us_per_delivery']:6.2f} µs CPU/delivery  "
                    f"p50 {result['p50_ms']:7.2f} p99 {result['p99_ms']:7.2f} ms  "
                    f"{result['delivered']:,}/{result['expected']:,}",
                    flush=True,
                )
            finally:
                target.stop()
    return rows, skipped


def run_hot_shape(
    makers: dict[str, Callable[[], Target]],
    wanted: list[str],
    sizes: list[int],
    args: argparse.Namespace,
) -> tuple[dict[Mode, list[tuple[str, Result]]], list[str]]:
    """Every size of every server once per round, round after round: the sizes a ratio
    compares run minutes apart, on the host as it is then (it drifts over an hour).
    Latency points in the first round only (paced, they measure the load generators as
    much as the server). Gives, per mode, each point's median round (latency: its one
    round), and what was not run."""
    rounds: dict[tuple[Mode, str, int], list[Result]] = {}
    skipped: list[str] = []
    too_big: set[tuple[str, int]] = set()  # known after the first round: not started again
    for round_number in range(1, args.rounds + 1):
        modes: tuple[Mode, ...] = ("throughput", "steady")
        if round_number == 1:
            modes += ("latency",)
        for name in wanted:
            for size in sizes:
                if (name, size) in too_big:
                    continue
                target = makers[name]()
                try:
                    if size > target.capacity:
                        too_big.add((name, size))
                        skipped.append(too_many(target, size))
                        continue
                    for mode in modes:
                        recorded = None
                        if args.profile is not None and mode != "latency":
                            suffix = f"-r{round_number}" if args.rounds > 1 else ""
                            steady = "-steady" if mode == "steady" else ""
                            recorded = args.profile / f"{name}-{size}{steady}{suffix}.data"
                        result = run_point(
                            target,
                            size,
                            mode,
                            profile=recorded,
                            throughput_events=args.events,
                            steady_rate=args.steady_rate,
                        )
                        rounds.setdefault((mode, target.name, size), []).append(result)
                        print_point(target.name, result, round_number, args.rounds)
                        if recorded is not None:
                            for line in breakdown(recorded, result["delivered"]):
                                print(f"    {line}", flush=True)
                finally:
                    target.stop()
    medians: dict[Mode, list[tuple[str, Result]]] = {"throughput": [], "steady": [], "latency": []}
    for (mode, name, _), results in rounds.items():
        medians[mode].append((name, median_round(results)))
    return medians, skipped


def too_many(target: Target, size: int) -> str:
    return f"{target.name} at {size:,} (one process holds < {FD_LIMIT:,} files)"


def print_point(name: str, result: Result, round_number: int, rounds: int) -> None:
    which = f"round {round_number}/{rounds} " if rounds > 1 else ""
    print(
        f"{name:34s} {result['subscribers']:>6,} {which}{result['mode']:10s} "
        f"{result['deliveries_per_s']:>11,.0f}/s{paced_of(result)}  "
        f"{result['us_per_delivery']:6.2f} µs CPU/delivery "
        f"({result['user_us_per_delivery']:.2f} user)  "
        f"TCP peak {result['tcp_peak_mib']:,.0f} MiB, "
        f"{result['tcp_memory_pressures']} pressure, "
        f"{result['tcp_retransmitted_segments']:,} resent  "
        f"p50 {result['p50_ms']:7.2f} p99 {result['p99_ms']:7.2f} ms  "
        f"{result['kib_per_connection']:5.1f} KiB/conn  "
        f"{result['delivered']:,}/{result['expected']:,}",
        flush=True,
    )


def paced_of(result: Result) -> str:
    """ " of <target>" for a paced point: whether the server kept the pace."""
    target = result.get("target_per_s")
    return "" if target is None else f" of {target:,.0f}"


def cost_cell(result: Result) -> str:
    """A table's "CPU µs per delivery (user + system)"."""
    return (
        f"{result['us_per_delivery']:.2f} ({result['user_us_per_delivery']:.2f} + "
        f"{result['system_us_per_delivery']:.2f})"
    )


def rounds_cell(result: Result) -> str:
    """A table's "CPU µs per delivery, each round" (``median_round``'s ``per_round``)."""
    return " / ".join(f"{x:.2f}" for x in result["per_round"])


def median_round(results: list[Result]) -> Result:
    """The round with the median CPU per delivery (the lower of the two middle ones for
    an even count): a row shows one run's figures together, not medians of each
    column from different runs; ``per_round`` keeps every round's CPU per delivery."""
    middle = sorted(results, key=lambda r: r["us_per_delivery"])[(len(results) - 1) // 2]
    return {**middle, "per_round": [r["us_per_delivery"] for r in results]}


def cost_growth(through: list[tuple[str, Result]]) -> list[str]:
    """Per server, CPU per delivery at its largest size over that at the smallest of at
    least 1,000 subscribers (the target: within 1.5 times) — by the medians, and in each
    round, where both points ran minutes apart."""
    lines = []
    for name in dict.fromkeys(n for n, _ in through):
        points = sorted((r["subscribers"], r) for n, r in through if n == name)
        bases = [r for subscribers, r in points if subscribers >= 1_000]
        if len(bases) < 2:
            continue
        base, top = bases[0], bases[-1]
        line = (
            f"- {name}: {top['us_per_delivery'] / base['us_per_delivery']:.2f}× from "
            f"{base['subscribers']:,} to {top['subscribers']:,} subscribers "
            f"({base['us_per_delivery']:.2f} → {top['us_per_delivery']:.2f} µs)"
        )
        if len(base["per_round"]) > 1:
            ratios = [t / b for b, t in zip(base["per_round"], top["per_round"], strict=True)]
            line += "; round by round " + " / ".join(f"{ratio:.2f}×" for ratio in ratios)
        lines.append(line)
    return lines


def hot_section(
    points: dict[Mode, list[tuple[str, Result]]],
    skipped: list[str],
    rounds: int,
    steady_rate: int,
    docs: Path,
    handed_back: tuple[int, float] | None = None,
) -> str:
    """The section; ``handed_back``: the order of the free blocks the VM reports to its
    host and the GiB it reported while the points ran (None where it does not)."""
    through, steady, paced = points["throughput"], points["steady"], points["latency"]
    plot(through, "deliveries_per_s", "deliveries/s", docs / "scale-throughput.png")
    plot(through, "us_per_delivery", "server CPU µs per delivery", docs / "scale-cost.png")
    plot(
        steady,
        "us_per_delivery",
        f"server CPU µs per delivery, {steady_rate:,} deliveries/s",
        docs / "scale-cost-steady.png",
    )
    plot(paced, "p99_ms", "p99 publish→deliver (ms), 20k deliveries/s", docs / "scale-p99.png")
    if rounds > 1:
        how = (
            f"{rounds} rounds, one after the other, each running every size of every "
            "server once; a throughput or steady row is the round with the median CPU per "
            "delivery (every round's figure in the last column); latency from the first "
            "round."
        )
    else:
        how = "One run (each point once: tens of thousands of connections take a while)."
    lines = [
        "## Scale: one hot channel, 100 to 50,000 subscribers — `python bench/scale.py`",
        "",
        f"{how} "
        "Throughput: one publisher as fast as the server takes it, 2,000,000 deliveries "
        "(at least 200 events: 10,000,000 deliveries at 50,000). "
        "Latency: paced so that deliveries total 20,000/s (at least 1 event/s). Server CPU and RSS are summed "
        "over all its processes (with `--workers`, the workers; NATS's own server not "
        "included). The hub and the load generators share the 2 cores.",
        "",
        "| server | subscribers | deliveries/s | server CPU µs per delivery (user + system) "
        "| p50 ms | p99 ms | KiB per connection | connect s | delivered "
        "| host TCP memory peak MiB | kernel memory pressure / segments resent "
        "| CPU µs per delivery, each round |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    latency_of = {(n, r["subscribers"]): r for n, r in paced}
    for name, r in through:
        lat = latency_of.get((name, r["subscribers"]), {})
        lines.append(
            f"| {name} | {r['subscribers']:,} | {r['deliveries_per_s']:,.0f} "
            f"| {cost_cell(r)} | {lat.get('p50_ms', float('nan')):.2f} "
            f"| {lat.get('p99_ms', float('nan')):.2f} | {r['kib_per_connection']:.1f} "
            f"| {r['connect_seconds']:.0f} | {r['delivered']:,}/{r['expected']:,} "
            f"| {r['tcp_peak_mib']:,.0f} | {r['tcp_memory_pressures']} / "
            f"{r['tcp_retransmitted_segments']:,} | {rounds_cell(r)} |"
        )
    growth = cost_growth(through)
    if growth:
        lines += ["", "At full speed, CPU per delivery, largest size ÷ 1,000 subscribers:", ""]
        lines += growth
    if steady:
        lines += [
            "",
            f"Steady: the same work at every size — one publisher paced so that deliveries "
            f"total {steady_rate:,}/s (more subscribers, fewer events; at least 1 event/s) "
            f"for {STEADY_SECONDS} s; no latencies decoded. Events come one by one, so "
            "each delivery is a write of its own (at full speed the writes to a "
            "subscriber carry tens of events): a delivery costs more than at full speed, "
            "and the same at every size when the hub does no more work per delivery as "
            "subscribers grow.",
            "",
            "| server | subscribers | events/s | deliveries/s | server CPU µs per delivery "
            "(user + system) | host TCP memory peak MiB | delivered "
            "| CPU µs per delivery, each round |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in steady:
            lines.append(
                f"| {name} | {r['subscribers']:,} | {r['rate']:,.1f} "
                f"| {r['deliveries_per_s']:,.0f}{paced_of(r)} "
                f"| {cost_cell(r)} | {r['tcp_peak_mib']:,.0f} "
                f"| {r['delivered']:,}/{r['expected']:,} | {rounds_cell(r)} |"
            )
        steady_growth = cost_growth(steady)
        if steady_growth:
            lines += [
                "",
                "Steady, CPU per delivery, largest size ÷ 1,000 subscribers (target: ≤ 1.5×):",
                "",
            ]
            lines += steady_growth
    if skipped:
        lines += ["", "Not run: " + "; ".join(skipped) + "."]
    _, pressure, hard = tcp_memory_limits()
    lines += [
        "",
        f"Host TCP memory: both ends of every connection count, the load generators' "
        f"unread receive queues included. This host's net.ipv4.tcp_mem puts it under "
        f"memory pressure above {pressure * PAGE / 2**20:,.0f} MiB (hard limit "
        f"{hard * PAGE / 2**20:,.0f} MiB); under pressure the kernel prunes receive "
        "queues, drops segments there and the sender sends them again — work the server's "
        "system CPU pays for (docs/scale.md).",
    ]
    if handed_back is not None:
        order, gib = handed_back
        lines += [
            "",
            f"Free page reporting: this VM's kernel hands the memory it frees back to "
            f"its host (virtio-balloon, free blocks of order {order} and up; "
            f"{gib:,.1f} GiB handed back during this run). Memory handed back "
            "faults in at the host when it is touched again: where socket buffers cycle "
            "through gigabytes (50,000 subscribers at full speed), the copies into them "
            "cost several times more (docs/scale.md).",
        ]
    lines += [
        "",
        "![deliveries/s](scale-throughput.png)",
        "![CPU per delivery](scale-cost.png)",
        "![CPU per delivery, steady](scale-cost-steady.png)",
        "![p99 latency](scale-p99.png)",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
