"""Speculative decoding: decode speed with prompt lookup (gemma-edge's `--spec ngram`) against no
speculation and against llama-cpp-python's own `LlamaPromptLookupDecoding`, same GGUF, same prompts,
greedy, interleaved repeats.

Sides: "no speculation" is gemma-edge as `--spec off` loads it (one token per decode step, llama.cpp's
defaults: the raw speed); "exact, no drafting" is the model loaded for speculation (`--spec ngram`: every
decode step 2..7 rows, weights not repacked; gemma_edge.llama.exact) decoding without drafts, which is
what prompt lookup must reproduce token for token (checked: `same_tokens_as_exact`) and what it costs
when nothing is drafted; "gemma-edge ngram" drafts. `auto_verdict` is what `--spec auto` may choose for
this machine and model from this run: "ngram" only if it was at least as fast as no speculation on every
task (gemma_edge.doctor.recommended_speculation).

    python -m bench.speculative [--model M] [--threads N] [--repeat 3] [--gen-tokens 96] [--quick]
    python -m bench.speculative --draft gemma-3-270m [--model TARGET]   # the draft-model pair mode
"""
from __future__ import annotations

from bench import common
from gemma_edge.measure import PROMPT_TEXT, edge_stream, interleaved, pyplot, save_figure, spread

NAME = "speculative"

BUGGY_FUNCTION = "\n".join(
    ["def summarize_orders(orders):",
     '    """Totals per customer, the largest order, and the customers over budget."""',
     "    totals = {}",
     "    largest = None"]
    + [f"    # step {i}: keep the bookkeeping readable" for i in range(1, 41)]
    + ["    for order in orders:",
       "        customer = order['customer']",
       "        amount = order['amount']",
       "        totals[customer] = totals.get(customer, 0) + amount",
       "        if largest is None or amount < largest['amount']:",
       "            largest = order",
       "    over = [c for c, total in totals.items() if total > 1000]",
       "    over.sort()",
       "    report = {'totals': totals, 'largest': largest, 'over_budget': over}",
       "    for customer in over:",
       "        report.setdefault('warnings', []).append(f'{customer} is over budget')",
       "    return report"])

RECORD = ("Invoice 20931 was issued by Larkspur Tools Ltd, 14 Mill Lane, Bristol, to Hannah Okafor on 3 March "
          "2025. It covers two cordless drills at 89.50 each and one box of wood screws at 12.25, a total of "
          "191.25 pounds, payable within 30 days to account 4471-2290.")

TASKS = {
    "rewrite": f"Rewrite the paragraph below in the past tense, keeping every detail.\n\n{PROMPT_TEXT}\n\n"
               "Rewritten paragraph:\n\n",
    "fix_bug": f"The function below should track the largest order but keeps the smallest. Fix the bug and "
               f"return the whole corrected function.\n\n{BUGGY_FUNCTION}\n\nCorrected function:\n\n",
    "extract_json": f"Extract the issuer, customer, date, total and account from the record as JSON, quoting "
                    f"the record's own words.\n\nRecord: {RECORD}\n\nJSON:\n",
    "summarise_quotes": f"Summarise the document in three sentences, quoting it word for word.\n\nDocument:\n"
                        f"{PROMPT_TEXT}{RECORD}\n\nSummary with quotes:\n\n",
    "free_story": "Write a short story about a fox who learns to sail.\n\nStory:\n\n",
}
INPUT_GROUNDED = ("rewrite", "fix_bug", "extract_json", "summarise_quotes")
OFF, EXACT, NGRAM, LCPP = ("no speculation", "exact, no drafting", "gemma-edge ngram",
                           "llama-cpp-python prompt lookup")


def run(model_path, threads: int, gen_tokens: int, repeat: int, tasks: dict) -> dict:
    from gemma_edge.api import Model
    from gemma_edge.llama import internals, llama_cpp

    n_ctx = 1024
    plain = Model(model_path, n_ctx=n_ctx, n_threads=threads, speculative="off")
    exact = Model(model_path, n_ctx=n_ctx, n_threads=threads, speculative="ngram")
    lc = llama_cpp()
    lookup = lc.Llama(str(model_path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                      verbose=False, logits_all=True,  # without it, its scores overflow past n_batch
                      draft_model=lc.llama_speculative.LlamaPromptLookupDecoding())
    stop_ids = plain.engine.stop_ids
    report = {"tasks": {}}
    for task, text in tasks.items():
        tokens = plain.tokenize_raw(text)
        counts: list[dict] = []
        runs = interleaved({OFF: lambda: edge_stream(plain, tokens, gen_tokens),
                            EXACT: lambda: edge_stream(exact, tokens, gen_tokens),
                            NGRAM: lambda: edge_stream(exact, tokens, gen_tokens, "ngram", counts),
                            LCPP: lambda: lookup_loop(lookup, tokens, gen_tokens, stop_ids)},
                           repeat, before_each=lambda: (plain.engine.reset(), exact.engine.reset(), lookup.reset(),
                                                        internals.drop_positions(lookup, 0)))
        speeds = {side: spread([m.decode_tokens_per_s for m in ms]) for side, ms in runs.items()}
        base = speeds[OFF]["median"]

        def same(side, reference):
            return all(m.tokens == runs[reference][0].tokens for m in runs[side])

        report["tasks"][task] = {
            "decode_tokens_per_s": speeds,
            "speedup_over_off": {side: round(s["median"] / base, 3) for side, s in speeds.items() if base},
            "generated_tokens": runs[OFF][0].generated_tokens,
            "accepted_per_drafted": f"{counts[-1]['accepted_tokens']}/{counts[-1]['drafted_tokens']}",
            # the lossless claim: drafting reproduces the exact decoding it runs on, token for token
            "same_tokens_as_exact": same(NGRAM, EXACT),
            # informational: one-token kernels (and repacked weights) round differently from exact batches,
            # so a near-tie may break the other way
            "same_tokens_as_off": {side: same(side, OFF) for side in runs if side != OFF},
        }
    report["settings"] = {"model": str(model_path), "threads": threads, "gen_tokens": gen_tokens, "repeat": repeat,
                          "n_ctx": n_ctx}
    report["goals"] = goals(report["tasks"])
    report["auto_verdict"] = auto_verdict(report["tasks"])
    plain.close()
    exact.close()
    lookup.close()
    return report


def lookup_loop(llm, tokens, max_tokens: int, stop_ids):
    """llama-cpp-python's own generate() with its prompt-lookup draft model, timed like the raw loop."""
    import time

    from gemma_edge.measure import Measurement, current_rss_mb

    start = time.perf_counter()
    first, generated = None, []
    for token in llm.generate(tokens, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        if first is None:
            first = time.perf_counter()
        if token in stop_ids or len(generated) == max_tokens:
            break
        generated.append(token)
    end = time.perf_counter()
    return Measurement(len(tokens), len(generated), (first or end) - start, end - start, current_rss_mb(),
                       tuple(generated))


def goals(tasks: dict) -> dict:
    grounded = [t for t in INPUT_GROUNDED if t in tasks]
    return {
        "input_grounded_at_least_1_5x": all(tasks[t]["speedup_over_off"][NGRAM] >= 1.5 for t in grounded),
        "ahead_of_llama_cpp_python_lookup": all(
            s["speedup_over_off"][NGRAM] >= s["speedup_over_off"][LCPP] for s in tasks.values()),
        "free_story_at_least_0_97x": ("free_story" not in tasks
                                      or tasks["free_story"]["speedup_over_off"][NGRAM] >= 0.97),
    }


def auto_verdict(tasks: dict) -> str:
    """What `--spec auto` may mean on this machine for this model, from this run: never a mode it shows slower."""
    return "ngram" if tasks and all(t["speedup_over_off"][NGRAM] >= 1.0 for t in tasks.values()) else "off"


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [f"### Speculative decoding ({s['threads']} threads, {s['gen_tokens']} generated tokens, greedy, "
             f"median of {s['repeat']} interleaved runs)", "",
             f"| task | {OFF} (tokens/s) | {EXACT} | {NGRAM} | {LCPP} | accepted/drafted | ngram same tokens as "
             f"exact | same tokens as {OFF} |",
             "|---|---|---|---|---|---|---|---|"]
    for task, row in report["tasks"].items():
        speeds, ratio = row["decode_tokens_per_s"], row["speedup_over_off"]
        cells = [f"{speeds[side]['median']:.1f} ({ratio[side]:.2f}×)" for side in (EXACT, NGRAM, LCPP)]
        lines.append(f"| {task} | {speeds[OFF]['median']:.1f} | {' | '.join(cells)} | {row['accepted_per_drafted']} | "
                     f"{row['same_tokens_as_exact']} | "
                     f"{', '.join(f'{k}: {v}' for k, v in row['same_tokens_as_off'].items())} |")
    lines += ["", "Goals: " + ", ".join(f"{k}: {'met' if v else 'not met'}" for k, v in report["goals"].items()),
              "", f"`--spec auto` from this run: {report['auto_verdict']}"]
    return "\n".join(lines) + "\n"


def plot_speedups(tasks: list[str], series: dict[str, list[float]], path):
    """Bars of decode speed over no speculation per task, one series per side; None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.76 / len(series)
    for i, (side, values) in enumerate(series.items()):
        ax.bar([t + (i - (len(series) - 1) / 2) * width for t in range(len(tasks))], values, width, label=side)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks(range(len(tasks)), tasks, fontsize=8)
    ax.set_ylabel("decode speed / no speculation")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot(report: dict, path):
    tasks = list(report["tasks"])
    return plot_speedups(tasks, {side: [report["tasks"][t]["speedup_over_off"][side] for t in tasks]
                                 for side in (NGRAM, LCPP)}, path)


# -- draft-model pair mode (--draft MODEL): a target and a smaller model of its vocabulary drafting ----------

DRAFT_NAME = "speculative_draft"
DRAFT = "gemma-edge draft model"


def default_pair_target():
    """The target of the pair buildable here: the real 270M weights (recovered from the embedded Q4_K_M)
    converted to F16 by our converter (cached; the embedded Q4_K_M drafts for it)."""
    from tests.convert.real_gemma3 import real_checkpoint, real_conversion

    return real_conversion(real_checkpoint(), "f16")


def run_pair(target_path, draft: str, threads: int, gen_tokens: int, repeat: int, tasks: dict) -> dict:
    """Decode speed of the target with the draft model drafting against no speculation, same Model,
    same prompts, greedy, interleaved; acceptance per task."""
    from gemma_edge.api import Model

    n_ctx = 1024
    model = Model(target_path, n_ctx=n_ctx, n_threads=threads, speculative=f"draft:{draft}")
    drafter = model.draft_model
    report = {"tasks": {}}
    for task, text in tasks.items():
        tokens = model.tokenize_raw(text)
        counts: list[dict] = []
        runs = interleaved({OFF: lambda: edge_stream(model, tokens, gen_tokens),
                            DRAFT: lambda: edge_stream(model, tokens, gen_tokens, model.speculative, counts)},
                           repeat, before_each=lambda: (model.engine.reset(), drafter.reset()))
        speeds = {side: spread([m.decode_tokens_per_s for m in ms]) for side, ms in runs.items()}
        base = speeds[OFF]["median"]
        report["tasks"][task] = {
            "decode_tokens_per_s": speeds,
            "speedup_over_off": round(speeds[DRAFT]["median"] / base, 3) if base else None,
            "generated_tokens": runs[OFF][0].generated_tokens,
            "accepted_per_drafted": f"{counts[-1]['accepted_tokens']}/{counts[-1]['drafted_tokens']}",
            "same_tokens_as_off": all(m.tokens == runs[OFF][0].tokens for m in runs[DRAFT]),
        }
    report["settings"] = {"target": str(target_path), "draft": str(drafter.facts.path), "threads": threads,
                          "gen_tokens": gen_tokens, "repeat": repeat, "n_ctx": n_ctx}
    model.close()
    return report


def markdown_pair(report: dict) -> str:
    s = report["settings"]
    lines = [f"### Draft model pair: {s['draft'].rsplit('/', 1)[-1]} drafting for {s['target'].rsplit('/', 1)[-1]} "
             f"({s['threads']} threads, {s['gen_tokens']} generated tokens, greedy, median of {s['repeat']} "
             "interleaved runs)", "",
             f"| task | {OFF} (tokens/s) | {DRAFT} | accepted/drafted | same tokens as {OFF} |", "|---|---|---|---|---|"]
    for task, row in report["tasks"].items():
        speeds = row["decode_tokens_per_s"]
        lines.append(f"| {task} | {speeds[OFF]['median']:.1f} | {speeds[DRAFT]['median']:.1f} "
                     f"({row['speedup_over_off']:.2f}×) | {row['accepted_per_drafted']} | {row['same_tokens_as_off']} |")
    return "\n".join(lines) + "\n"


def plot_pair(report: dict, path):
    tasks = list(report["tasks"])
    return plot_speedups(tasks, {DRAFT: [report["tasks"][t]["speedup_over_off"] for t in tasks]}, path)


def main_pair(args, tasks: dict) -> dict:
    target = common.model_path(args.model) if args.model else default_pair_target()
    report = run_pair(target, args.draft, common.threads(args.threads, target), 16 if args.quick else args.gen_tokens,
                      1 if args.quick else args.repeat, tasks)
    return common.finish(args.out, DRAFT_NAME, report, markdown_pair(report), lambda path: plot_pair(report, path))


# -- end of the draft-model pair mode ------------------------------------------------------------------------


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--gen-tokens", type=int, default=96)
    p.set_defaults(repeat=3)  # 5 tasks x 4 sides x (1 warm-up + 3) runs: sized for ~6 minutes on 2 idle cores
    p.add_argument("--tasks", nargs="*", choices=sorted(TASKS), default=None, help="a subset of the tasks")
    p.add_argument("--draft", default=None, metavar="MODEL",
                   help="the draft-model pair mode: MODEL drafts for --model (default: the real 270M in F16)")
    args = p.parse_args(argv)
    names = args.tasks or (list(TASKS)[:1] if args.quick else list(TASKS))
    tasks = {name: TASKS[name] for name in names}
    if args.draft:
        return main_pair(args, tasks)
    path = common.model_path(args.model)
    report = run(path, common.threads(args.threads, path), 16 if args.quick else args.gen_tokens,
                 1 if args.quick else args.repeat, tasks)
    return common.finish(args.out, NAME, report, markdown(report), lambda path: plot(report, path))


if __name__ == "__main__":
    main()
