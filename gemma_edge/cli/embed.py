"""`embed`: text in (one input per line), embeddings out (JSON lines or a .npy array); `search`: the
paragraphs of a folder of text files closest to a query."""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

import click

from gemma_edge.cli.common import UserError, friendly_errors
from gemma_edge.embedding import DEFAULT_TASK, TASK_PROMPTS

BATCH = 32  # inputs per call into llama.cpp (bounded memory for long files, streaming JSON lines)


def read_inputs(source: str) -> list[str]:
    """The non-empty lines of `source` (a path, or - for stdin), UTF-8."""
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {source}: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{'stdin' if source == '-' else source} is not UTF-8 text (byte {e.start})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise UserError(f"{'stdin' if source == '-' else source} has no text to embed (one input per line)")
    return lines


@contextlib.contextmanager
def staged(output: str):
    """A binary file handle for `output`, renamed into place only when the block succeeds."""
    target = Path(output)
    staging = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with open(staging, "wb") as handle:
            yield handle
        os.replace(staging, target)
    except OSError as e:
        raise UserError(f"cannot write {output}: {e.strerror}") from None
    finally:
        staging.unlink(missing_ok=True)


def write_npy(array, output: str | None) -> None:
    """The array as .npy to `output` or to a non-terminal stdout."""
    import numpy as np

    if output is not None:
        with staged(output) as handle:
            np.save(handle, array, allow_pickle=False)
        return
    if sys.stdout.isatty():
        raise UserError("--format npy writes binary: give --output FILE or redirect stdout")
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    sys.stdout.buffer.write(buffer.getvalue())
    sys.stdout.buffer.flush()


def write_jsonl(rows, handle) -> None:
    """One {"index", "embedding"} line per row, flushed per batch of rows."""
    index = 0
    for batch in rows:
        for row in batch:
            handle.write((json.dumps({"index": index, "embedding": [float(v) for v in row]}) + "\n").encode("utf-8"))
            index += 1
        handle.flush()


@click.command()
@click.argument("source", metavar="FILE|-", default="-")
@click.option("--model", "-m", "model_name", required=True, metavar="MODEL",
              help="An embedding model: registry name (e.g. embeddinggemma-300m) or .gguf path.")
@click.option("--task", type=click.Choice(list(TASK_PROMPTS)), default=DEFAULT_TASK, show_default=True,
              help="EmbeddingGemma's task prompt: query for search queries, document for what is searched; "
                   "none embeds the lines as given.")
@click.option("--dimensions", type=click.IntRange(min=1), default=None, metavar="N",
              help="Keep the first N values (Matryoshka; EmbeddingGemma: 768, 512, 256 or 128), re-normalised.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "npy"]), default="jsonl", show_default=True,
              help="jsonl: one {\"index\", \"embedding\"} line per input; npy: one float32 array (inputs x N).")
@click.option("--output", "-o", default=None, metavar="FILE", help="Write here instead of stdout.")
@click.option("--no-normalize", is_flag=True, help="Leave the vectors at their own length.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: the physical cores).")
@friendly_errors
def embed(source, model_name, task, dimensions, fmt, output, no_normalize, threads):
    """Embed each line of FILE (- or nothing: stdin) with an embedding model such as EmbeddingGemma.

    \b
      gemma-edge embed -m embeddinggemma-300m questions.txt
      gemma-edge embed -m embeddinggemma-300m --task document --dimensions 256 --format npy -o docs.npy docs.txt
    """
    import numpy as np

    from gemma_edge.api import load

    texts = read_inputs(source)
    model = load(model_name, n_threads=threads)
    options = {"task": task, "dimensions": dimensions, "normalize": not no_normalize}
    batches = (model.embed(texts[i:i + BATCH], **options) for i in range(0, len(texts), BATCH))
    if fmt == "npy":
        write_npy(np.concatenate(list(batches)), output)
    elif output is not None:
        with staged(output) as handle:
            write_jsonl(batches, handle)
    else:
        write_jsonl(batches, sys.stdout.buffer)


def paragraphs(folder: Path, pattern: str) -> list[tuple[str, int, str]]:
    """(file relative to `folder`, first line number, text) of every paragraph (blank-line separated) of
    the UTF-8 files matching `pattern` under `folder`."""
    found = []
    for path in sorted(p for p in folder.rglob(pattern) if p.is_file()):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"cannot read {path} as UTF-8 text ({e})") from None
        start, block = 0, []
        for number, line in enumerate([*lines, ""], 1):
            if line.strip():
                start, block = (start or number), [*block, line]
            elif block:
                found.append((str(path.relative_to(folder)), start, "\n".join(block)))
                start, block = 0, []
    if not found:
        raise UserError(f"no text in files matching {pattern} under {folder}")
    return found


@click.command()
@click.argument("query")
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--model", "-m", "model_name", required=True, metavar="MODEL", help="An embedding model.")
@click.option("--top", "-n", type=click.IntRange(min=1), default=5, show_default=True, help="How many results.")
@click.option("--glob", "pattern", default="*.txt", show_default=True, help="Which files under FOLDER to read.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: the physical cores).")
@friendly_errors
def search(query, folder, model_name, top, pattern, threads):
    """The paragraphs of FOLDER's text files closest in meaning to QUERY (embedded on the fly, nothing stored).

    \b
      gemma-edge search -m embeddinggemma-300m "how do I reset the router" ~/notes
    """
    import numpy as np

    from gemma_edge.api import load

    found = paragraphs(folder, pattern)
    model = load(model_name, n_threads=threads)
    question = model.embed(query, task="query")
    documents = [model.embed([text for _, _, text in found[i:i + BATCH]], task="document")
                 for i in range(0, len(found), BATCH)]
    scores = np.concatenate(documents) @ question
    for index in np.argsort(-scores)[:top]:
        name, line, text = found[index]
        click.echo(f"{scores[index]:.3f}  {name}:{line}  {' '.join(text.split())[:100]}")
