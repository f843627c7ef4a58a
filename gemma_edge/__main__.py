from gemma_edge.cli import main

main(prog_name="gemma-edge")
