"""How gemma-edge's benchmarks measure (the `gemma-edge bench` command and the scripts in bench/ share it):
gemma-edge's generation path timed against a raw llama.cpp loop on the very same `Llama` object (same
GGUF, threads, context and batch size), interleaved runs, summaries, tables, plots and result files.

Both sides are timed from the outside with the same definitions, so their ratio is meaningful:

* time to first token (TTFT): from the call to the first sampled token being available;
* prefill tokens/s: prompt tokens evaluated / TTFT;
* decode tokens/s: tokens after the first / time from the first token to the end of the loop.

Both sides start from an empty KV cache and use greedy sampling, so they do identical work and must
produce identical tokens (checked: a mismatch means the comparison is not like with like). Runs are
interleaved A/B/B/A… after a warm-up, and reported as median with min–max.
"""
from __future__ import annotations

import importlib.metadata
import json
import platform
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

# Fixed prose the synthetic prompts are cut from (original text, so results are reproducible anywhere).
PROMPT_TEXT = (
    "The harbour town woke slowly. Fishing boats came back with the tide, gulls argued over the nets, "
    "and the baker on the hill opened his shutters to let the smell of bread roll down to the water. "
    "Children ran along the sea wall counting ships, while the old lighthouse keeper wrote the weather "
    "in his book as he had done every morning for forty years. "
)

EDGE = "gemma-edge"
RAW = "llama.cpp"


@dataclass(frozen=True)
class Measurement:
    """One timed generation."""
    prompt_tokens: int
    generated_tokens: int
    ttft_s: float
    total_s: float
    rss_mb: float
    tokens: tuple[int, ...] = ()

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.ttft_s if self.ttft_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        decode_s = self.total_s - self.ttft_s
        return (self.generated_tokens - 1) / decode_s if self.generated_tokens > 1 and decode_s > 0 else 0.0

    def as_dict(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "generated_tokens": self.generated_tokens,
                "ttft_s": round(self.ttft_s, 5), "total_s": round(self.total_s, 5),
                "prefill_tokens_per_s": round(self.prefill_tokens_per_s, 2),
                "decode_tokens_per_s": round(self.decode_tokens_per_s, 2), "rss_mb": round(self.rss_mb, 1)}


def current_rss_mb() -> float:
    """Resident set size now (Linux /proc; elsewhere the peak, which is what macOS offers cheaply)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process image. Linux: VmHWM, because ru_maxrss survives exec and
    would report a benchmark worker's parent's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def prompt_tokens(llm, n_tokens: int, bos: int | None = None) -> list[int]:
    """Exactly `n_tokens` ids: BOS, then the fixed prose repeated as needed."""
    bos = llm.token_bos() if bos is None else bos
    body = llm.tokenize(PROMPT_TEXT.encode("utf-8"), add_bos=False, special=False)
    needed = max(0, n_tokens - 1)
    repeats = needed // len(body) + 1
    return [bos] + (body * repeats)[:needed]


# -- the two sides --------------------------------------------------------------------------------

def raw_loop(llm, tokens: Sequence[int], max_tokens: int, stop_ids: Iterable[int] = (),
             clock: Callable[[], float] = time.perf_counter) -> Measurement:
    """The baseline: `Llama.eval` on the prompt, then a greedy sample/eval loop — no rendering,
    parsing, streaming or detokenizing. Stops where gemma-edge stops (a stop token or `max_tokens`),
    so both sides do the same number of samples and evaluations. `clock`: wall time by default;
    `time.process_time` measures CPU time instead (steadier on a shared machine at 1 thread)."""
    from gemma_edge.llama.internals import GreedySampler

    stop = set(stop_ids)
    sampler = GreedySampler()
    try:
        start = clock()
        llm.n_tokens = 0
        llm.eval(list(tokens))
        generated: list[int] = []
        first = None
        while len(generated) < max_tokens:
            token = sampler.next_token(llm)
            if first is None:
                first = clock()
            if token in stop:
                break
            generated.append(token)
            llm.eval([token])
        end = clock()
    finally:
        sampler.close()
    return Measurement(len(tokens), len(generated), (first or end) - start, end - start, current_rss_mb(),
                       tuple(generated))


def time_to_first_and_end(events: Iterable, clock: Callable[[], float] = time.perf_counter) -> tuple[float, float]:
    """(seconds to the first item, seconds to exhaustion) of iterating `events` from its first `next()`.
    The first item marks the first token (gemma-edge's streams yield every non-empty piece at once)."""
    start = clock()
    first = None
    for _ in events:
        if first is None:
            first = clock()
    end = clock()
    return (first or end) - start, end - start


def timed_stream(events: Iterable, prompt_evaluated: Callable[[], int], generated: Callable[[], Sequence[int]]
                 ) -> Measurement:
    """Time a gemma-edge event stream from its first `next()` to exhaustion."""
    ttft, total = time_to_first_and_end(events)
    tokens = tuple(generated())
    return Measurement(prompt_evaluated(), len(tokens), ttft, total, current_rss_mb(), tokens)


def edge_stream(model, tokens: Sequence[int], max_tokens: int, spec: str = "off",
                usages: list | None = None) -> Measurement:
    """gemma-edge's public streaming path for a token prompt: `Engine.generate` wrapped in the
    `ResponseStream` that `Model.stream(raw=True)` returns (incremental UTF-8 detokenizing, events);
    `spec`: its speculative decoding mode ("off", "ngram", or the draft:MODEL or mtp:DRAFTER the model was
    loaded with); the decode run's usage is appended to `usages`."""
    from gemma_edge.api import ResponseStream
    from gemma_edge.sampling import Sampling

    run = model.engine.generate(tokens, Sampling(temperature=0), max_tokens=max_tokens,
                                speculation=model.speculation(spec))
    stream = ResponseStream(run, None, raw=True)
    measurement = timed_stream(stream, lambda: run.prompt_evaluated, lambda: run.tokens)
    if usages is not None:
        usages.append(run.usage)
    return measurement


# -- interleaving and summaries --------------------------------------------------------------------

def interleaved(runners: dict[str, Callable[[], Measurement]], repeat: int, before_each: Callable[[], None],
                warmup: int = 1) -> dict[str, list[Measurement]]:
    """Run each side `repeat` times, alternating the order every round (A B, B A, A B, …) so drift in
    the machine's load hits both sides alike. `before_each` restores the starting state (empty KV
    cache). Warm-up rounds (page cache, thread pools, repacking) are discarded."""
    names = list(runners)
    results: dict[str, list[Measurement]] = {name: [] for name in names}
    for round_ in range(warmup + repeat):
        order = names if round_ % 2 == 0 else names[::-1]
        for name in order:
            before_each()
            measurement = runners[name]()
            if round_ >= warmup:
                results[name].append(measurement)
    return results


def spread(values: Sequence[float]) -> dict:
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4), "n": len(values)}


METRICS = {
    "prefill_tokens_per_s": lambda m: m.prefill_tokens_per_s,
    "decode_tokens_per_s": lambda m: m.decode_tokens_per_s,
    "ttft_s": lambda m: m.ttft_s,
    "rss_mb": lambda m: m.rss_mb,
}


def summarize(results: dict[str, list[Measurement]], baseline: str = RAW) -> dict:
    """Per side and metric: median, min, max; plus each side's median over the baseline's."""
    summary = {name: {metric: spread([get(m) for m in runs]) for metric, get in METRICS.items()}
               for name, runs in results.items()}
    ratios = {}
    for name in results:
        if name == baseline:
            continue
        ratios[name] = {metric: _ratio(summary[name][metric]["median"], summary[baseline][metric]["median"])
                        for metric in METRICS}
    identical = len({tuple(m.tokens) for runs in results.values() for m in runs}) == 1
    return {"sides": summary, "ratio_to_" + baseline.replace(".", "_"): ratios, "identical_tokens": identical,
            "runs": {name: [m.as_dict() for m in runs] for name, runs in results.items()}}


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 4) if b else None


def machine_description() -> dict:
    from gemma_edge.hardware import physical_cores, total_memory

    return {"system": platform.system(), "machine": platform.machine(), "cpu": _cpu_name(),
            "physical_cores": physical_cores(), "logical_cpus": _logical_cpus(),
            "total_memory_gb": round(total_memory() / 2**30, 1), "python": platform.python_version(),
            "llama_cpp_python": _llama_version()}


def _logical_cpus() -> int:
    import os

    return os.cpu_count() or 1


def _cpu_name() -> str:
    from gemma_edge.hardware import cpu_name

    return cpu_name() or platform.processor() or platform.machine()


def _llama_version() -> str:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


# -- the `bench` command's measurement -------------------------------------------------------------

@dataclass(frozen=True)
class BenchSettings:
    threads: int
    n_ctx: int
    n_batch: int
    prompt_tokens: int
    gen_tokens: int
    repeat: int
    spec: str = "off"  # gemma-edge's speculative decoding mode (the raw loop never speculates)


def bench_model(model, settings: BenchSettings) -> dict:
    """gemma-edge vs the raw loop on one loaded model (`gemma_edge.api.Model`)."""
    engine = model.engine
    tokens = prompt_tokens(engine.llm, settings.prompt_tokens)
    runners = {
        EDGE: lambda: edge_stream(model, tokens, settings.gen_tokens, settings.spec),
        RAW: lambda: raw_loop(engine.llm, tokens, settings.gen_tokens, engine.stop_ids),
    }
    results = interleaved(runners, settings.repeat, engine.reset)
    engine.reset()
    report = summarize(results)
    report.update({"model": model.facts.describe() | {"path": str(model.facts.path)},
                   "settings": asdict(settings), "machine": machine_description(),
                   "peak_rss_mb": round(peak_rss_mb(), 1)})
    return report


# -- output -----------------------------------------------------------------------------------------

def markdown_table(report: dict, baseline: str = RAW) -> str:
    """Rows: metrics; columns: each side as `median (min–max)`, then the ratio to the baseline."""
    sides = list(report["sides"])
    others = [s for s in sides if s != baseline]
    ratios = report.get("ratio_to_" + baseline.replace(".", "_"), {})
    header = "| metric | " + " | ".join(sides) + " | " + " | ".join(f"{s} / {baseline}" for s in others) + " |"
    lines = [header, "|" + "---|" * (1 + len(sides) + len(others))]
    labels = {"prefill_tokens_per_s": "prefill (tokens/s)", "decode_tokens_per_s": "decode (tokens/s)",
              "ttft_s": "time to first token (s)", "rss_mb": "RSS (MB)"}
    for metric, label in labels.items():
        cells = [_cell(report["sides"][s][metric]) for s in sides]
        ratio_cells = [f"{ratios[s][metric]:.3f}" if ratios.get(s, {}).get(metric) is not None else "–"
                       for s in others]
        lines.append(f"| {label} | " + " | ".join(cells + ratio_cells) + " |")
    return "\n".join(lines)


def _cell(s: dict) -> str:
    fmt = "{:.3f}" if s["median"] < 10 else "{:.1f}"
    return f"{fmt.format(s['median'])} ({fmt.format(s['min'])}–{fmt.format(s['max'])})"


def pyplot():
    """matplotlib's pyplot on a file-only backend, or None when the optional `plot` extra is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_figure(fig, path: Path) -> Path:
    """Lay out, write as PNG and release a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_bars(report: dict, path: Path, title: str) -> Path | None:
    """A PNG bar chart of prefill and decode medians with min–max whiskers; None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    sides = list(report["sides"])
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    for ax, metric, label in zip(axes, ("prefill_tokens_per_s", "decode_tokens_per_s"), ("prefill", "decode")):
        stats = [report["sides"][s][metric] for s in sides]
        medians = [s["median"] for s in stats]
        errors = [[m - s["min"] for m, s in zip(medians, stats)], [s["max"] - m for m, s in zip(medians, stats)]]
        ax.bar(sides, medians, yerr=errors, capsize=4, color=["#4c72b0", "#dd8452", "#55a868", "#c44e52"][:len(sides)])
        ax.set_title(f"{label} (tokens/s)")
    fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(fig, path)


def write_results(directory: Path, name: str, report: dict, markdown: str) -> dict[str, Path]:
    """`name.json` (machines) and `name.md` (people) under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"json": directory / f"{name}.json", "md": directory / f"{name}.md"}
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown.rstrip() + "\n", encoding="utf-8")
    return paths
