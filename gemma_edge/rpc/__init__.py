"""Split one model across machines with llama.cpp's RPC backend (ggml-rpc).

A worker (`gemma-edge worker`) serves its CPU memory and compute over TCP; the loading process
registers the workers with ggml's backend registry, and llama.cpp places layers on them like on GPUs:
the first layers stay on the local CPU, the rest (and the output layer) go to the workers in order.

- `endpoints`   worker addresses: parsing, reachability (ggml-rpc aborts on a refused connection)
- `placement`   pure: which layers go where (llama.cpp's own rule), from free memory or --split
- `workers`     serving this CPU as a worker; registering workers and placing a model's layers
- `supervision` the one crash-safe way to run a split model (CLI and Python API alike)
- `links`       round-trip time and bandwidth per worker, and the decode speed they allow

The ggml bindings themselves are in gemma_edge.llama.rpc_backend. The RPC protocol has no
authentication and no encryption: anyone who reaches a worker's port can read and write its memory
and run computations on it. Workers listen on loopback unless told otherwise; across machines, use
them only on a network you trust.
"""
