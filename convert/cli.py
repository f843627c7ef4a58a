"""``convert`` and ``quantize`` commands (mounted as ``gemma-edge convert|quantize`` and ``python -m convert``).

Only click is imported at module level so ``gemma-edge --help`` stays fast; numpy, gguf and llama.cpp
are imported inside the commands. Every user error is one line on stderr and exit code 2, and leaves
nothing on disk.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

NATIVE = ("f32", "f16", "bf16", "q8_0")


class ConvertFailed(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _known_errors() -> tuple[type[BaseException], ...]:
    from convert.checkpoint import CheckpointError
    from convert.family import UnrunnableModel
    from convert.generations import UnsupportedArchitecture
    from convert.generations.base import UnsupportedCheckpoint, UnsupportedConfig
    from convert.quantize import QuantizeError
    from convert.vocab import TokenizerError
    from convert.writer import OutputExists
    from gemma_edge.errors import GemmaEdgeError

    # GemmaEdgeError: a malformed GGUF to quantize (InvalidModelError), no or the wrong llama-cpp-python
    return (CheckpointError, UnsupportedArchitecture, UnsupportedCheckpoint, UnsupportedConfig,
            QuantizeError, TokenizerError, OutputExists, UnrunnableModel, GemmaEdgeError)


def _run(action):
    """Run ``action`` turning known failures, full disks and Ctrl-C into a one-line error (exit 2)."""
    known = _known_errors()
    try:
        return action()
    except known as error:
        raise ConvertFailed(str(error)) from None
    except KeyboardInterrupt:
        raise ConvertFailed("interrupted; no output written") from None
    except OSError as error:
        raise ConvertFailed(f"{error.strerror or error} ({error.filename or 'output'}); no output written") from None


@click.command("convert")
@click.argument("hf_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path), help="GGUF file to write.")
@click.option("--type", "type_name", default="f16", show_default=True,
              help="f32, f16, bf16, q8_0 (written directly) or any llama.cpp file type (q4_k_m, q6_k, iq4_nl, ...).")
@click.option("--mmproj/--no-mmproj", "mmproj", default=None,
              help="The image/audio encoder file mmproj-<output stem>.gguf, written next to the output. "
                   "Default: written when the checkpoint has a vision/audio tower llama.cpp supports, "
                   "otherwise a note says why not. --mmproj: fail instead. --no-mmproj: text GGUF only.")
@click.option("--mmproj-type", type=click.Choice(["f32", "f16", "bf16", "q8_0"], case_sensitive=False),
              help="Storage type of the mmproj's weights (llama.cpp's encoders take no k-quants). "
                   "Default: f32 when --type is f32, else f16. 1-D, norm and position tensors stay F32 as llama.cpp needs.")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@click.option("--threads", default=0, show_default=True, help="Quantizer threads (0 = all cores).")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout.")
def convert_command(hf_dir: Path, output: Path, type_name: str, mmproj: bool | None, mmproj_type: str | None,
                    force: bool, threads: int, quiet: bool, as_json: bool) -> None:
    """Convert a Hugging Face Gemma checkpoint directory to a GGUF file (and its mmproj, see --mmproj)."""
    def action():
        from convert.api import convert_checkpoint

        options = dict(mmproj=mmproj, mmproj_type=mmproj_type)
        if quiet:
            summary = convert_checkpoint(hf_dir, output, type_name, force, threads, **options)
        else:
            with _Progress() as progress:
                summary = convert_checkpoint(hf_dir, output, type_name, force, threads,
                                             on_tensor=progress.advance, on_plan=progress.start, **options)
        if as_json:
            click.echo(json.dumps(_summary_json(output, type_name, summary), indent=2))
        elif not quiet:
            click.echo(
                f"wrote {output} ({type_name.lower()}): {summary.tensors} tensors, {summary.bytes / 1e6:.1f} MB, "
                f"{summary.seconds:.1f} s, peak memory {summary.peak_rss_mb:.0f} MB",
                err=True,
            )
            if summary.mmproj is not None:
                click.echo(f"wrote {summary.mmproj}: {summary.mmproj_tensors} tensors, "
                           f"{summary.mmproj_bytes / 1e6:.1f} MB", err=True)
            for note in summary.notes:
                click.echo(f"note: {note}", err=True)

    _run(action)


def _summary_json(output: Path, type_name: str, summary) -> dict:
    return {
        "output": str(output), "type": type_name.lower(), "tensors": summary.tensors, "bytes": summary.bytes,
        "mmproj": None if summary.mmproj is None else str(summary.mmproj),
        "mmproj_tensors": summary.mmproj_tensors, "mmproj_bytes": summary.mmproj_bytes,
        "seconds": round(summary.seconds, 3), "peak_rss_mb": round(summary.peak_rss_mb, 1), "notes": summary.notes,
    }


class _Progress:
    """A per-tensor progress bar on stderr, started once the number of tensors is known."""

    def __init__(self):
        self.bar = None

    def __enter__(self):
        return self

    def start(self, total: int) -> None:
        self.bar = click.progressbar(length=total, label="converting", file=sys.stderr,
                                     item_show_func=lambda name: name)
        self.bar.__enter__()

    def advance(self, tensor) -> None:
        self.bar.update(1, tensor.name)

    def __exit__(self, *exc_info):
        if self.bar is not None:
            self.bar.__exit__(*exc_info)


@click.command("quantize")
@click.argument("input_gguf", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path), help="GGUF file to write.")
@click.option("--type", "type_name", required=True, help="llama.cpp file type: q4_k_m, q5_k_m, q6_k, q8_0, q4_0, iq4_nl, ...")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--threads", default=0, show_default=True, help="Quantizer threads (0 = all cores).")
@click.option("--allow-requantize", is_flag=True, help="Accept an already quantized input (lossy twice).")
def quantize_command(input_gguf: Path, output: Path, type_name: str, force: bool, threads: int,
                     allow_requantize: bool) -> None:
    """Quantize a GGUF file with llama.cpp's quantizer."""

    def action():
        from convert.quantize import quantize

        quantize(input_gguf, output, type_name, force=force, threads=threads, allow_requantize=allow_requantize)

    _run(action)


@click.group()
def main() -> None:
    """Gemma checkpoint conversion: Hugging Face safetensors → GGUF → quantized GGUF."""


main.add_command(convert_command)
main.add_command(quantize_command)
