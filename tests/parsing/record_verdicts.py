"""Re-record transformers_verdicts.json: how transformers' Gemma 4 parser handles each corpus
case compared with ours. Run `python -m tests.parsing.record_verdicts` after editing the corpus;
test_corpus.py then keeps the file honest."""
from __future__ import annotations

import json

from gemma_edge.parsing import parse_response
from tests.parsing import corpus


def main() -> None:
    verdicts = {}
    for case in corpus.cases():
        ours = parse_response(corpus.text_of(case), format=case.get("format", "gemma4"), **corpus.options_of(case))
        verdicts[case["id"]] = corpus.transformers_verdicts(case, ours)
    path = corpus.HERE / "transformers_verdicts.json"
    path.write_text(json.dumps(verdicts, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    for version in ("5.23", "5.12"):
        counts: dict[str, int] = {}
        for v in verdicts.values():
            counts[v[version]] = counts.get(v[version], 0) + 1
        print(version, counts)


if __name__ == "__main__":
    main()
