"""The datapath fuzzer (issue 12): generated and mutated packets through every
TC program with BPF_PROG_TEST_RUN, judged by a model of what may be translated.
`python -m tests.fuzz.run --packets 1000000` (make fuzz); a short run is
test_fuzz_short.py (make test)."""
