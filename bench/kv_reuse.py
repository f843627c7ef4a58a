"""5. KV reuse: time to first token on chat turn 1 … N, where each turn only prefills its new tokens,
and turn N again with the cache emptied first (what it would cost without reuse).

    python -m bench.kv_reuse [--model M] [--threads N] [--turns 10] [--reply-tokens 32] [--repeat 5]
"""
from __future__ import annotations

from bench import common
from gemma_edge.measure import PROMPT_TEXT, pyplot, save_figure, spread, time_to_first_and_end

NAME = "kv_reuse"
QUESTIONS = [
    "Tell me about the harbour town.", "Who keeps the lighthouse?", "What does the baker sell?",
    "Where do the children play?", "What is the weather like today?", "Describe the fishing boats.",
    "What do the gulls do?", "How old is the lighthouse?", "What happens in the evening?",
    "Summarise our conversation.",
]


def question(turn: int) -> str:
    """Turn 1 carries a longer text, so the first prompt is not trivially short."""
    q = QUESTIONS[turn % len(QUESTIONS)]
    return f"{PROMPT_TEXT}\n\n{q}" if turn == 0 else q


def timed_turn(chat, text: str) -> dict:
    ttft, _ = time_to_first_and_end(chat.stream(text))
    r = chat.last_response
    return {"ttft_s": ttft, "engine_ttft_s": r.timings["time_to_first_token_s"],
            "prompt_tokens": r.usage["prompt_tokens"], "prompt_tokens_evaluated": r.usage["prompt_tokens_evaluated"],
            "completion_tokens": r.usage["completion_tokens"]}


def conversation(model, turns: int, reply_tokens: int) -> dict:
    """One conversation of `turns` turns with reuse, then the last turn again from an empty cache."""
    from gemma_edge.chat import Chat

    model.engine.reset()
    chat = Chat(model, max_tokens=reply_tokens, temperature=0)
    measured = [timed_turn(chat, question(t)) for t in range(turns)]
    last_user = chat.messages[-2]["content"]
    chat.messages = chat.messages[:-2]  # replay the last turn on an empty cache
    model.engine.reset()
    cold = timed_turn(chat, last_user)
    return {"turns": measured, "last_turn_without_reuse": cold}


def run(model_path, threads: int, turns: int, reply_tokens: int, repeat: int) -> dict:
    from gemma_edge.api import Model

    model = Model(model_path, n_ctx=4096, n_threads=threads)
    conversation(model, min(turns, 2), reply_tokens)  # warm-up
    runs = [conversation(model, turns, reply_tokens) for _ in range(repeat)]
    per_turn = []
    for t in range(turns):
        rows = [r["turns"][t] for r in runs]
        per_turn.append({"turn": t + 1, "ttft_s": spread([x["ttft_s"] for x in rows]),
                         "engine_ttft_s": spread([x["engine_ttft_s"] for x in rows]),
                         "prompt_tokens": rows[0]["prompt_tokens"],
                         "prompt_tokens_evaluated": rows[0]["prompt_tokens_evaluated"]})
    cold = [r["last_turn_without_reuse"] for r in runs]
    first, last = per_turn[0]["ttft_s"]["median"], per_turn[-1]["ttft_s"]["median"]
    report = {
        "per_turn": per_turn,
        "last_turn_without_reuse": {"ttft_s": spread([x["ttft_s"] for x in cold]),
                                    "prompt_tokens_evaluated": cold[0]["prompt_tokens_evaluated"]},
        "ttft_last_over_first": round(last / first, 3),
        "acceptance_within_1_5x": last <= 1.5 * first,
        "settings": {"model": str(model_path), "threads": threads, "turns": turns, "reply_tokens": reply_tokens,
                     "repeat": repeat, "n_ctx": model.n_ctx},
        "runs": runs,
    }
    model.close()
    return report


def markdown(report: dict) -> str:
    s = report["settings"]
    lines = [f"### KV reuse across chat turns ({s['threads']} threads, replies ≤ {s['reply_tokens']} tokens, "
             f"median of {s['repeat']} conversations)", "",
             "| turn | prompt tokens | evaluated | time to first token (s) |", "|---|---|---|---|"]
    for row in report["per_turn"]:
        t = row["ttft_s"]
        lines.append(f"| {row['turn']} | {row['prompt_tokens']} | {row['prompt_tokens_evaluated']} | "
                     f"{t['median']:.3f} ({t['min']:.3f}–{t['max']:.3f}) |")
    cold = report["last_turn_without_reuse"]
    lines.append(f"| {len(report['per_turn'])}, cache emptied | {report['per_turn'][-1]['prompt_tokens']} | "
                 f"{cold['prompt_tokens_evaluated']} | {cold['ttft_s']['median']:.3f} "
                 f"({cold['ttft_s']['min']:.3f}–{cold['ttft_s']['max']:.3f}) |")
    lines += ["", f"Turn {len(report['per_turn'])} / turn 1 time to first token: {report['ttft_last_over_first']}× "
                  f"(acceptance: ≤ 1.5×: {'yes' if report['acceptance_within_1_5x'] else 'no'})."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path):
    plt = pyplot()
    if plt is None:
        return None
    turns = [r["turn"] for r in report["per_turn"]]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(turns, [r["ttft_s"]["median"] for r in report["per_turn"]], marker="o", label="with KV reuse")
    ax.plot([turns[-1]], [report["last_turn_without_reuse"]["ttft_s"]["median"]], marker="x", linestyle="",
            markersize=10, label="last turn, cache emptied")
    ax.set_xlabel("chat turn")
    ax.set_ylabel("time to first token (s)")
    ax.set_ylim(bottom=0)
    ax.legend()
    return save_figure(fig, path)


def main(argv=None) -> dict:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--reply-tokens", type=int, default=32)
    args = p.parse_args(argv)
    if args.quick:
        args.turns, args.reply_tokens, args.repeat = 3, 4, 1
    path = common.model_path(args.model)
    report = run(path, common.threads(args.threads, path), args.turns, args.reply_tokens, args.repeat)
    report["files"] = common.finish(args.out, NAME, report, markdown(report), lambda p: plot(report, p))
    return report


if __name__ == "__main__":
    main()
