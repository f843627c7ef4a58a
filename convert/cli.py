"""``convert`` and ``quantize`` commands (mounted as ``gemma-edge convert|quantize`` and ``python -m convert``).

Only click is imported at module level so ``gemma-edge --help`` stays fast; numpy, gguf and llama.cpp
are imported inside the commands. Every user error is one line on stderr and exit code 2, and leaves
nothing on disk.
"""
from __future__ import annotations

from pathlib import Path

import click

NATIVE = ("f32", "f16", "bf16", "q8_0")


class ConvertFailed(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _known_errors() -> tuple[type[BaseException], ...]:
    from convert.checkpoint import CheckpointError
    from convert.generations import UnsupportedArchitecture
    from convert.generations.base import UnsupportedCheckpoint, UnsupportedConfig
    from convert.quantize import QuantizeError
    from convert.vocab import TokenizerError
    from convert.writer import OutputExists

    return (CheckpointError, UnsupportedArchitecture, UnsupportedCheckpoint, UnsupportedConfig,
            QuantizeError, TokenizerError, OutputExists)


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


def _intermediate_type(storage_dtypes: set[str]) -> str:
    """Lossless input for llama.cpp's quantizer: the checkpoint's own precision."""
    if storage_dtypes <= {"BF16"}:
        return "bf16"
    if storage_dtypes <= {"F16"}:
        return "f16"
    return "f32"


@click.command("convert")
@click.argument("hf_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path), help="GGUF file to write.")
@click.option("--type", "type_name", default="f16", show_default=True,
              help="f32, f16, bf16, q8_0 (written directly) or any llama.cpp file type (q4_k_m, q6_k, iq4_nl, ...).")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--threads", default=0, show_default=True, help="Quantizer threads (0 = all cores).")
@click.option("--quiet", is_flag=True, help="No progress bar or summary.")
def convert_command(hf_dir: Path, output: Path, type_name: str, force: bool, threads: int, quiet: bool) -> None:
    """Convert a Hugging Face Gemma checkpoint directory to a GGUF file."""
    type_name = type_name.lower()

    def action():
        from convert.checkpoint import open_checkpoint
        from convert.pipeline import plan_conversion
        from convert.quantize import QuantizeError, file_types, quantize
        from convert.storage import NATIVE_TYPES
        from convert.writer import OutputExists, temporary_path

        if type_name not in NATIVE_TYPES and type_name not in file_types():
            raise QuantizeError(f"unknown output type {type_name!r}; use f32, f16, bf16, q8_0 or a llama.cpp file type")
        if output.exists() and not force:
            raise OutputExists(f"{output} exists (use --force to overwrite)")
        checkpoint = open_checkpoint(hf_dir)
        direct = type_name in NATIVE_TYPES
        first_type = type_name if direct else _intermediate_type(checkpoint.storage_dtypes)
        plan = plan_conversion(checkpoint, NATIVE_TYPES[first_type], name=hf_dir.resolve().name)
        target = output if direct else temporary_path(output).with_suffix(f".{first_type}.gguf")
        try:
            summary = _write_with_progress(plan, target, force, quiet)
            if not direct:
                quantize(target, output, type_name, force=force, threads=threads)
        finally:
            if not direct:
                target.unlink(missing_ok=True)
        if not quiet:
            size = output.stat().st_size
            click.echo(
                f"wrote {output} ({type_name}): {summary.tensors} tensors, {size / 1e6:.1f} MB, "
                f"{summary.seconds:.1f} s, peak memory {summary.peak_rss_mb:.0f} MB",
                err=True,
            )
            for note in summary.notes:
                click.echo(f"note: {note}", err=True)

    _run(action)


def _write_with_progress(plan, target: Path, force: bool, quiet: bool):
    from convert.pipeline import write_plan

    if quiet:
        return write_plan(plan, target, force)
    with click.progressbar(length=len(plan.tensors), label="converting", file=click.get_text_stream("stderr"),
                           item_show_func=lambda name: name) as bar:
        return write_plan(plan, target, force, on_tensor=lambda tensor: bar.update(1, tensor.name))


@click.command("quantize")
@click.argument("input_gguf", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path), help="GGUF file to write.")
@click.option("--type", "type_name", required=True, help="llama.cpp file type: q4_k_m, q5_k_m, q6_k, q8_0, q4_0, iq4_nl, ...")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@click.option("--threads", default=0, show_default=True, help="Quantizer threads (0 = all cores).")
def quantize_command(input_gguf: Path, output: Path, type_name: str, force: bool, threads: int) -> None:
    """Quantize a GGUF file with llama.cpp's quantizer."""

    def action():
        from convert.quantize import quantize

        quantize(input_gguf, output, type_name, force=force, threads=threads)

    _run(action)


@click.group()
def main() -> None:
    """Gemma checkpoint conversion: Hugging Face safetensors → GGUF → quantized GGUF."""


main.add_command(convert_command)
main.add_command(quantize_command)
