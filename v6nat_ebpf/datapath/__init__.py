"""The kernel half of v6nat: loading bpf/, attaching to interfaces, typed map access."""
