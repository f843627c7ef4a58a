"""The `gemma-edge` command line. Each command lives in its own module and is imported only
when it is invoked, so `gemma-edge --help` and quick commands start fast."""
from __future__ import annotations

import importlib
import importlib.util

import click

# command name -> "module:attribute" of a click.Command
COMMANDS = {
    "run": "gemma_edge.cli.generate:run",
    "chat": "gemma_edge.cli.generate:chat",
    "embed": "gemma_edge.cli.embed:embed",
    "demo": "gemma_edge.cli.generate:demo",
    "info": "gemma_edge.cli.models:info",
    "list": "gemma_edge.cli.models:list_models",
    "pull": "gemma_edge.cli.models:pull",
    "rm": "gemma_edge.cli.models:rm",
    "template": "gemma_edge.cli.template:template",
    "search": "gemma_edge.cli.embed:search",
    "serve": "gemma_edge.cli.serve:serve",
    "bench": "gemma_edge.cli.bench:bench",
    "perplexity": "gemma_edge.cli.bench:perplexity",
    "doctor": "gemma_edge.cli.doctor:doctor",
    "worker": "gemma_edge.cli.worker:worker",
    "convert": "convert.cli:convert_command",
    "quantize": "convert.cli:quantize_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(name for name in COMMANDS if self._importable(name))

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    @staticmethod
    def _importable(name):
        try:
            return importlib.util.find_spec(COMMANDS[name].split(":")[0]) is not None
        except ModuleNotFoundError:
            return False


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="gemma-edge")
def main():
    """Run Google's Gemma models offline on a laptop CPU or an ARM board.

    \b
    Start here:
      gemma-edge run "Why is the sky blue?"     one answer from the default model
      gemma-edge chat                            interactive chat (streaming)
      gemma-edge list                            known models and what is downloaded
      gemma-edge pull gemma-3-1b-it              fetch a model from Hugging Face
      gemma-edge convert HF_DIR -o model.gguf    turn a checkpoint into GGUF
    """
