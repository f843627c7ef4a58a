from convert.cli import main

main(prog_name="python -m convert")
